"""Stand-in for pip's get-pip.py bootstrap script, for ansible-test's sanity virtualenvs.

ansible-test creates one virtualenv per sanity test and bootstraps pip in each by running
get-pip-<version>.py, which it downloads from ci-files.testing.ansible.com unless it finds
~/.ansible/test/cache/get_pip_<version with _>.py. That host is not reachable from every machine
this project runs on (package registries are), so botops.collection.sanity() puts this file there.

ansible-test runs it as __main__ with pip install arguments: its pinned pip (pip==24.2) and get-pip's
own --no-setuptools / --no-wheel. This installs pip with the interpreter's ensurepip and then the
requested packages from the package index pip is configured for.
"""

import subprocess
import sys

GET_PIP_ONLY = ("--no-setuptools", "--no-wheel")  # get-pip.py options that pip install does not take


def main():
    args = [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY]
    subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"])
    return subprocess.call([sys.executable, "-m", "pip", "install", "--upgrade"] + args)


if __name__ == "__main__":
    sys.exit(main())
