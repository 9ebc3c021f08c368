"""The process around a run: devices and hosts, the workdir, files, config history."""
