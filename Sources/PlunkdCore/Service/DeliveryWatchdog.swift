import Dispatch
import Foundation
import Logging

/// systemd's watchdog (`WatchdogSec=`): `WATCHDOG=1` goes out only when the sender
/// proves it is alive, by answering on its own queue with no request stuck past its
/// timeout. A wedged sender stops the pings, and systemd restarts the daemon; events in
/// flight are sent again after the restart.
final class DeliveryWatchdog: @unchecked Sendable {
    private let sender: Sender
    private let notifier: SystemdNotifier
    private let interval: TimeInterval
    private let maxRequestAge: TimeInterval
    private let logger: Logger
    private let queue = DispatchQueue(label: "plunkd.watchdog")
    private var timer: DispatchSourceTimer?
    /// Confined to `queue`.
    private var reportedStuck = false

    init(sender: Sender, notifier: SystemdNotifier, interval: TimeInterval, maxRequestAge: TimeInterval, logger: Logger) {
        self.sender = sender
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
            sender.checkProgress(maxRequestAge: maxRequestAge) { [self] alive in
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

    func stop() {
        queue.sync {
            timer?.cancel()
            timer = nil
        }
    }
}

/// The one line systemd shows for the service (`STATUS=`), by delivery state.
