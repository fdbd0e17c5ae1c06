import Dispatch
import Foundation
import Logging
import NIOConcurrencyHelpers

/// systemd's watchdog (`WatchdogSec=`): `WATCHDOG=1` goes out only when every sender
/// (track's and the email line's) proves it is alive, by answering on its own queue with
/// no request stuck past its timeout. One wedged sender stops the pings, and systemd
/// restarts the daemon; events in flight are sent again after the restart.
///
/// Unchecked `Sendable`: `timer` and `reportedStuck` are touched only on `queue`.
final class DeliveryWatchdog: @unchecked Sendable {
    private let senders: [Sender]
    private let notifier: SystemdNotifier
    private let interval: TimeInterval
    private let maxRequestAge: TimeInterval
    private let logger: Logger
    private let queue = DispatchQueue(label: "plunkd.watchdog")
    private var timer: DispatchSourceTimer?
    /// Confined to `queue`.
    private var reportedStuck = false

    init(senders: [Sender], notifier: SystemdNotifier, interval: TimeInterval, maxRequestAge: TimeInterval, logger: Logger) {
        self.senders = senders
        self.notifier = notifier
        self.interval = interval
        self.maxRequestAge = maxRequestAge
        self.logger = logger
    }

    func start() {
        let timer = DispatchSource.makeTimerSource(queue: queue)
        // Half the interval, as sd_watchdog_enabled(3) advises, so one late ping is not fatal.
        timer.schedule(deadline: .now(), repeating: interval / 2)
        timer.setEventHandler { [self] in
            Self.checkProgress(of: senders, maxRequestAge: maxRequestAge) { [self] alive in
                queue.async { [self] in
                    if alive {
                        notifier.notify("WATCHDOG=1")
                        reportedStuck = false
                    } else if !reportedStuck {
                        reportedStuck = true
                        logger.critical(
                            "a request to Plunk has gone unanswered past its timeout: delivery is stuck; withholding the watchdog ping so systemd restarts plunkd"
                        )
                    }
                }
            }
        }
        timer.resume()
        queue.sync { self.timer = timer }
    }

    /// Replies true once every sender has answered alive, false as soon as one answers
    /// stuck, and never while one does not answer (a wedged queue): no reply, no ping.
    static func checkProgress(of senders: [Sender], maxRequestAge: TimeInterval, reply: @escaping @Sendable (Bool) -> Void) {
        let tally = NIOLockedValueBox((alive: 0, done: false))
        for sender in senders {
            sender.checkProgress(maxRequestAge: maxRequestAge) { alive in
                let verdict: Bool? = tally.withLockedValue { tally in
                    guard !tally.done else { return nil }
                    if !alive {
                        tally.done = true
                        return false
                    }
                    tally.alive += 1
                    if tally.alive == senders.count {
                        tally.done = true
                        return true
                    }
                    return nil
                }
                if let verdict { reply(verdict) }
            }
        }
    }

    func stop() {
        queue.sync {
            timer?.cancel()
            timer = nil
        }
    }
}

/// The one line systemd shows for the service (`STATUS=`), by delivery state.
