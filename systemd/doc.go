// Package systemd is certagent's Go side of systemd: sd_notify readiness,
// status and watchdog pings, and logging to journald with the native
// protocol. It wraps go-systemd and imports nothing of certagent's.
package systemd
