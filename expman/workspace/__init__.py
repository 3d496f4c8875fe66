"""The workspace on disk: its layout, journal, lock, snapshots, log files, atomic writes.

Everything here is plain file work with no knowledge of events or runs' lifecycles;
the subscribers (writers) and the runtime build on it.
"""
