/* sd_notify.h - systemd's service notifications, without libsystemd.
 *
 * Under a unit of Type=notify systemd names a datagram socket in
 * $NOTIFY_SOCKET; a service says READY=1 once it serves, WATCHDOG=1 at
 * least every WatchdogSec= (else systemd kills and restarts it: a wedged
 * process), STOPPING=1 when it starts to drain. Elsewhere (no
 * $NOTIFY_SOCKET) these do nothing, so the programs call them always.
 */
#ifndef SMQ_SD_NOTIFY_H
#define SMQ_SD_NOTIFY_H

#include <stdint.h>

/* Sends state ("READY=1", "WATCHDOG=1", ...; newline-separated for several)
 * to $NOTIFY_SOCKET. 0 when sent or when nobody asked for it; -1 when the
 * socket named cannot be reached (the caller may say so; nothing else is
 * wrong with the process). */
int smq_notify(const char *state);

/* How often this process must send WATCHDOG=1, in milliseconds: half of
 * systemd's WatchdogSec= ($WATCHDOG_USEC, when $WATCHDOG_PID is unset or
 * this process), or 0 when there is no watchdog. */
uint64_t smq_watchdog_ms(void);

#endif
