import Logging
import ServiceLifecycle
import Synchronization
import UnixSignals

/// One long-lived part of the daemon (the store's checkpointer, the sender, the socket…)
/// as a ServiceLifecycle `Service`.
///
/// A `ServiceGroup` starts its services all at once and stops them in reverse order, each
/// after the one behind it has finished. The parts must also *start* in order (the sender
/// before the socket that feeds it; READY=1 only once everything is up), so each part
/// waits its turn in a `StartSequence`. A part that fails to start ends the group
/// gracefully: the parts after it never start, and those before it stop in reverse order.
struct DaemonPart: Service, CustomStringConvertible {
    let description: String
    let index: Int
    let sequence: StartSequence
    let start: @Sendable () async throws -> Void
    /// Runs between start and stop; returns at graceful shutdown.
    let serve: @Sendable () async -> Void
    let stop: @Sendable () async -> Void

    func run() async throws {
        guard await sequence.waitForTurn(index) else {
            // An earlier part failed, or shutdown came first: nothing to start or to stop,
            // but the group expects this part to end only when told to.
            try? await gracefulShutdown()
            return
        }
        do {
            try await start()
        } catch {
            sequence.failed()
            throw error
        }
        sequence.started(index)
        await serve()
        await stop()
    }
}

/// The parts in start-up order, made into one `ServiceGroup`.
struct DaemonParts {
    private var parts: [(name: String, start: @Sendable () async throws -> Void, serve: (@Sendable () async -> Void)?, stop: @Sendable () async -> Void)] = []

    mutating func add(
        _ name: String, start: @escaping @Sendable () async throws -> Void = {},
        serve: (@Sendable () async -> Void)? = nil, stop: @escaping @Sendable () async -> Void = {}
    ) {
        parts.append((name, start, serve, stop))
    }

    /// - Parameter backstop: how long graceful shutdown may take before the parts still
    ///   running are cancelled.
    func group(signals: [UnixSignal], backstop: Duration, logger: Logger) -> ServiceGroup {
        let sequence = StartSequence()
        let services = parts.enumerated().map { index, part in
            ServiceGroupConfiguration.ServiceConfiguration(
                service: DaemonPart(
                    description: part.name, index: index, sequence: sequence, start: part.start,
                    serve: part.serve ?? { try? await gracefulShutdown() }, stop: part.stop),
                successTerminationBehavior: .gracefullyShutdownGroup,
                failureTerminationBehavior: .gracefullyShutdownGroup)
        }
        var configuration = ServiceGroupConfiguration(services: services, gracefulShutdownSignals: signals, logger: logger)
        configuration.maximumGracefulShutdownDuration = backstop
        return ServiceGroup(configuration: configuration)
    }
}

/// Lets part n start once parts 0..<n have started; after a failure, none more.
final class StartSequence: Sendable {
    private struct State {
        var started = 0
        var failed = false
        var waiting: [Int: CheckedContinuation<Bool, Never>] = [:]
        var abandoned: Set<Int> = []
    }

    private let state = Mutex(State())

    /// True when it is `index`'s turn; false when an earlier part failed or graceful
    /// shutdown reached this part first.
    func waitForTurn(_ index: Int) async -> Bool {
        await withGracefulShutdownHandler {
            await withCheckedContinuation { continuation in
                state.withLock { state in
                    if state.failed || state.abandoned.contains(index) {
                        continuation.resume(returning: false)
                    } else if state.started == index {
                        continuation.resume(returning: true)
                    } else {
                        state.waiting[index] = continuation
                    }
                }
            }
        } onGracefulShutdown: {
            self.state.withLock { state in
                state.abandoned.insert(index)
                state.waiting.removeValue(forKey: index)?.resume(returning: false)
            }
        }
    }

    func started(_ index: Int) {
        state.withLock { state in
            state.started = index + 1
            state.waiting.removeValue(forKey: index + 1)?.resume(returning: true)
        }
    }

    func failed() {
        state.withLock { state in
            state.failed = true
            state.waiting.values.forEach { $0.resume(returning: false) }
            state.waiting = [:]
        }
    }
}
