import Foundation
import NIOCore

/// One event per line in, one reply line per event out, in order.
///
/// The handler frames lines itself instead of using a generic line decoder, because an
/// oversize line must be answered and skipped without ever being held whole in memory,
/// and the connection must go on with the next line.
final class NDJSONIngestHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private enum Reply {
        case ready(String)
        /// The event's own id: the receipt says whether it was a repeat, and of which id.
        case awaiting(id: UUID, group: UInt64)
    }

    private struct GroupOutcome {
        let result: Result<EnqueueReceipt, IngestRefusal>
        var remaining: Int
    }

    private let committer: GroupCommitter
    private let validator: EventValidator
    /// Past this many events waiting for their commit, the connection stops reading, so a
    /// fast pipelining client cannot queue unbounded memory in the daemon.
    private let maxUnresolvedEvents: Int

    private var replies = CircularBuffer<Reply>()
    private var outcomes: [UInt64: GroupOutcome] = [:]
    private var nextGroup: UInt64 = 0
    private var unresolvedEvents = 0
    private var partialLine: ByteBuffer?
    private var discardingOversizeLine = false
    private var readPending = false
    private var inputClosed = false
    private var draining = false

    init(committer: GroupCommitter, validator: EventValidator, maxUnresolvedEvents: Int = 128) {
        self.committer = committer
        self.validator = validator
        self.maxUnresolvedEvents = maxUnresolvedEvents
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        var events: [AcceptedEvent] = []
        let group = nextGroup
        while buffer.readableBytes > 0 {
            guard let newline = buffer.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) else {
                keepPartial(&buffer)
                break
            }
            let length = newline - buffer.readerIndex
            if discardingOversizeLine {
                buffer.moveReaderIndex(forwardBy: length + 1)
                discardingOversizeLine = false
                continue
            }
            var line = buffer.readSlice(length: length)!
            buffer.moveReaderIndex(forwardBy: 1)
            if var partial = partialLine {
                partial.writeBuffer(&line)
                line = partial
                partialLine = nil
            }
            accept(line: line, group: group, into: &events)
        }
        submit(events, group: group, context: context)
        flushReplies(context: context)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case ChannelEvent.inputClosed:
            inputClosed = true
            // A last line without a newline still counts: `printf '{…}' | nc -U` must work.
            if let partial = partialLine, !discardingOversizeLine {
                partialLine = nil
                var events: [AcceptedEvent] = []
                let group = nextGroup
                accept(line: partial, group: group, into: &events)
                submit(events, group: group, context: context)
            }
            flushReplies(context: context)
        case is ChannelShouldQuiesceEvent:
            draining = true
            flushReplies(context: context)
        case let idle as IdleStateHandler.IdleStateEvent where idle == .all:
            if replies.isEmpty { context.close(promise: nil) }
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        resumeReadingIfPossible(context: context)
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    // MARK: Outbound

    func read(context: ChannelHandlerContext) {
        if mustPauseReading(context: context) {
            readPending = true
        } else {
            context.read()
        }
    }

    // MARK: Lines

    private func keepPartial(_ buffer: inout ByteBuffer) {
        if discardingOversizeLine {
            buffer.moveReaderIndex(to: buffer.writerIndex)
            return
        }
        let held = (partialLine?.readableBytes ?? 0) + buffer.readableBytes
        // One byte of slack for a trailing "\r".
        if held > validator.maxEventBytes + 1 {
            partialLine = nil
            discardingOversizeLine = true
            buffer.moveReaderIndex(to: buffer.writerIndex)
            committer.metrics.refusedTooLarge.increment()
            replies.append(
                .ready(
                    Self.refusal(
                        "line is longer than \(validator.maxEventBytes) bytes; it was skipped without being read",
                        retryable: false)))
            return
        }
        if partialLine == nil {
            partialLine = buffer.slice()
            buffer.moveReaderIndex(to: buffer.writerIndex)
        } else {
            partialLine!.writeBuffer(&buffer)
        }
    }

    private func accept(line: ByteBuffer, group: UInt64, into events: inout [AcceptedEvent]) {
        var view = line.readableBytesView
        if view.last == UInt8(ascii: "\r") { view = view.dropLast() }
        // Blank lines carry nothing and get no reply, so `echo` with extra newlines is harmless.
        guard view.contains(where: { !Self.isJSONWhitespace($0) }) else { return }
        do {
            let event = try validator.validate(Data(view))
            events.append(event)
            replies.append(.awaiting(id: event.id, group: group))
        } catch {
            committer.metrics.refusedInvalid.increment()
            replies.append(.ready(Self.refusal(error.message, retryable: false)))
        }
    }

    private func submit(_ events: [AcceptedEvent], group: UInt64, context: ChannelHandlerContext) {
        guard !events.isEmpty else { return }
        nextGroup += 1
        unresolvedEvents += events.count
        let count = events.count
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        committer.submit(events) { result in
            // On this loop when refused at once: reply now.
            loopBound.eventLoop.runHere {
                let (handler, context) = loopBound.value
                handler.resolve(group: group, result: result, count: count, context: context)
            }
        }
    }

    private func resolve(group: UInt64, result: Result<EnqueueReceipt, IngestRefusal>, count: Int, context: ChannelHandlerContext) {
        outcomes[group] = GroupOutcome(result: result, remaining: count)
        flushReplies(context: context)
    }

    /// Writes every reply whose turn has come, in line order, as one write.
    private func flushReplies(context: ChannelHandlerContext) {
        var out: ByteBuffer?
        flushing: while let head = replies.first {
            let text: String
            switch head {
            case .ready(let reply):
                text = reply
            case .awaiting(let id, let group):
                guard var outcome = outcomes[group] else { break flushing }
                switch outcome.result {
                case .success(let receipt):
                    let first = receipt.acknowledgedID(ofEventWith: id)
                    if let claim = receipt.claimedElsewhere[id] {
                        text = Self.refusal(claim.refusal, retryable: false)
                    } else {
                        text = Self.acknowledgement(first, repeated: first != id)
                    }
                case .failure(let refusal): text = Self.refusal(refusal.description, retryable: true)
                }
                outcome.remaining -= 1
                outcomes[group] = outcome.remaining == 0 ? nil : outcome
                unresolvedEvents -= 1
            }
            if out == nil { out = context.channel.allocator.buffer(capacity: 64 * min(replies.count, 1024)) }
            out!.writeString(text)
            replies.removeFirst()
        }
        if replies.isEmpty && (inputClosed || draining) {
            // Closing drops writes still queued for a client that reads slowly, so it waits
            // for the last one (writes complete in order, so an empty one stands for them all).
            let channel = context.channel
            let last = out ?? channel.allocator.buffer(capacity: 0)
            context.writeAndFlush(wrapOutboundOut(last)).whenComplete { _ in channel.close(promise: nil) }
            return
        }
        if let out, context.channel.isActive {
            context.writeAndFlush(wrapOutboundOut(out), promise: nil)
        }
        resumeReadingIfPossible(context: context)
    }

    private func mustPauseReading(context: ChannelHandlerContext) -> Bool {
        draining || unresolvedEvents >= maxUnresolvedEvents || !context.channel.isWritable
    }

    private func resumeReadingIfPossible(context: ChannelHandlerContext) {
        if readPending && !mustPauseReading(context: context) {
            readPending = false
            context.read()
        }
    }

    private static func isJSONWhitespace(_ byte: UInt8) -> Bool {
        byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D
    }

    /// `repeated`: the line repeated a client's `Idempotency-Key`; `id` is the first event's.
    static func acknowledgement(_ id: UUID, repeated: Bool = false) -> String {
        repeated
            ? "{\"ok\":true,\"id\":\"\(id.lowercasedText)\",\"repeated\":true}\n"
            : "{\"ok\":true,\"id\":\"\(id.lowercasedText)\"}\n"
    }

    static func refusal(_ message: String, retryable: Bool) -> String {
        "{\"ok\":false,\"error\":\(JSONText.quoted(message)),\"retryable\":\(retryable)}\n"
    }
}
