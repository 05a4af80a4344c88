"""Fault injection: the fleet tasks under real faults (database down, crashes, kills, full disks)."""
