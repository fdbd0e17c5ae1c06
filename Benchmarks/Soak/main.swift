import Foundation
import PlunkdTestSupport

#if canImport(Glibc)
    import Glibc
#endif

// Crash-loop soak: the plunkd binary, a Plunk stand-in failing ~30% of requests (one 2xx
// in five slow, so kills find 2xx answers on their way), 8
// producers over both framings, and `kill -9` at random moments, each followed by a
// restart. It then lets the daemon drain and checks: nothing acknowledged lost, each
// contact's events delivered in acknowledgement order, duplicates within kills ×
// concurrency, no request rate beyond what concurrency allows, and no retry storm in a
// total outage at the end of the run (probes one at a time, spaced by backoff).
//
//   swift build -c release && .build/release/plunkd-soak [--seconds 120] [--kills 6] [--rate 400] [--outage 5] [--auto 16]
//
// (--auto N runs the daemon with plunk.concurrency: auto up to N, every bound taken at N.)
//
// With --power-cut 1 (as root, with /dev/fuse and python3-fusepy) the store lives on
// Tests/PowerCut/cutfs.py, and each kill is a power cut: everything not yet fsynced is
// thrown away, the daemon dies with the disk, and the restart finds only what was synced.
// The cuts take turns at a random moment, the next checkpoint and a start-up. Then one cut
// each falls on the write right after a 402 and after a 401 (storing the pause; parking the
// event and the hold), and at the end a quota pause and an auth hold stored before a cut
// must still be in force after it.
//
// With --kills 0 it is the long soak: one daemon for the whole run, its resident memory,
// open descriptors and threads sampled (every --sample seconds, by default 1/120 of the
// run) and compared between the run's second and last quarters:
//
//   .build/release/plunkd-soak --seconds 3600 --kills 0 --rate 40 --failures 5
//
// (--failures is the share of requests the stand-in fails, 30% unless told: at 30%, its
// 429s with Retry-After hold all of Plunk often enough that delivery falls behind 200
// events/s and the backlog, not a leak, would grow for an hour.)
//
// Nothing in it can hang: every wait has a deadline, and the whole run has one too
// (--deadline, by default 3 × --seconds + 300 s), at which it releases the store's mount,
// kills the daemons and cutfs it started, and fails, saying where it was. Its daemons die
// with it however it ends (a parent-death signal), and a cutfs that outlives it releases
// its own mount. --freeze-cutfs-at S stops cutfs (SIGSTOP) S seconds in, to show that a
// frozen filesystem fails the soak in time and leaves no mount or process behind.
//
// Exits 0 when every check holds, 1 otherwise.

let seconds = BenchmarkSupport.option("--seconds", 120)
let kills = max(BenchmarkSupport.option("--kills", 6), 0)
let rate = BenchmarkSupport.option("--rate", 400)
let outageSeconds = max(BenchmarkSupport.option("--outage", 5), 1)
let failurePercent = BenchmarkSupport.option("--failures", 30)
let powerCuts = BenchmarkSupport.option("--power-cut", 0) != 0
/// --auto N: `plunk.concurrency: auto` up to N, and the bounds below taken at N.
let autoMaximum = max(BenchmarkSupport.option("--auto", 0), 0)
let concurrency = autoMaximum > 0 ? autoMaximum : 8
/// The drain ends when every acknowledged event arrived, or when none arrived for this
/// long: a backlog left by a long run drains for as long as it keeps moving.
let drainStall = 60.0

let runDeadline = Double(BenchmarkSupport.option("--deadline", 3 * seconds + 300))
let freezeCutfsAt = BenchmarkSupport.option("--freeze-cutfs-at", 0)

let what = powerCuts ? "power cuts" : "kills"
print("plunkd crash-loop soak: \(seconds) s, \(kills) \(what), \(rate) events/s offered, \(BenchmarkSupport.machine)")
let fake = try await FlakyPlunk(failureShare: Double(failurePercent) / 100)
let directory = try DaemonProcess.makeScratchDirectory()
var environment = [
    "PLUNK_BASE_URL": fake.baseURL, "PLUNK_API_KEY": "pk_soak_key", "PLUNK_CONCURRENCY": autoMaximum > 0 ? "auto" : "\(concurrency)",
    "PLUNK_MAX_CONCURRENCY": "\(concurrency)",
    "PLUNK_REQUEST_TIMEOUT": "0.5", "PLUNKD_RETRY_INITIAL_BACKOFF": "0.05", "PLUNKD_RETRY_MAX_BACKOFF": "1",
    "PLUNKD_SHUTDOWN_GRACE": "1", "PLUNKD_LOG_LEVEL": "warning",
]
let disk = powerCuts ? try PowerCutMount(directory: directory) : nil
let soakDeadline = SoakDeadline(seconds: runDeadline, mountpoint: disk?.mountpoint)
if let disk, freezeCutfsAt > 0 {
    let cutfs = disk.currentPid.load(ordering: .acquiring)
    DispatchQueue.global().asyncAfter(deadline: .now() + .seconds(freezeCutfsAt)) {
        print("freezing cutfs (pid \(cutfs)) on purpose, \(freezeCutfsAt) s in")
        kill(cutfs, SIGSTOP)
    }
}
if let disk { environment["PLUNKD_STORAGE_PATH"] = "\(disk.mountpoint)/outbox.sqlite" }
var daemon = try DaemonProcess(directory: directory, environment: environment)
try daemon.waitUntilServing()
let watch = kills == 0 ? ResourceWatch(pid: daemon.pid, interval: Double(BenchmarkSupport.option("--sample", max(seconds / 120, 1)))) : nil
watch?.start()
let producers = Producers(socketPath: daemon.socketPath, count: 8, eventsPerSecond: Double(rate))
producers.start()

// One kill at a random moment in each of `kills` equal slots of the run.
let slot = Double(seconds) / Double(max(kills, 1))
let start = BenchmarkSupport.now()
var restarts: [Double] = []
/// What each power cut aims at, in turn: a random moment, a checkpoint copying the log
/// into the database, and the start-up after a cut (its repair of the lines, the first
/// commits). Kills without power cuts are all at random moments.
enum CutMoment: String {
    case random, checkpoint
    case startUp = "start-up"
}
var aimedCutsThatFell: [CutMoment: Int] = [:]
/// The kills take turns (random, checkpoint, start-up): how many of each aimed moment.
let aimedCutsExpected: [CutMoment: Int] = [.checkpoint: (0..<kills).filter { $0 % 3 == 1 }.count, .startUp: (0..<kills).filter { $0 % 3 == 2 }.count]

/// The disk loses what was not synced and stops answering, the daemon dies with the
/// machine, and the disk is mounted again as it was left.
@MainActor func powerCycle(_ disk: PowerCutMount?, aimed: Int32?) throws {
    if let aimed, let disk {
        disk.aim(aimed)
        if try disk.cut(aimedWithin: 10) { aimedCutsThatFell[aimed == SIGUSR2 ? .checkpoint : .startUp, default: 0] += 1 }
    } else {
        try disk?.cut()
    }
    daemon.signal(SIGKILL)
    daemon.waitForExit(timeout: 30)
    fake.beginEpoch()
    if let disk {
        disk.unmount()
        try disk.mount()
    }
}

for k in 0..<kills {
    let at = start + slot * (Double(k) + Double.random(in: 0.3..<1.0))
    let wait = at - BenchmarkSupport.now()
    if wait > 0 { usleep(UInt32(wait * 1e6)) }
    let moment: CutMoment = powerCuts ? [.random, .checkpoint, .startUp][k % 3] : .random
    try powerCycle(disk, aimed: moment == .checkpoint ? SIGUSR2 : nil)
    let begin = BenchmarkSupport.now()
    if moment == .startUp {
        // The power goes again during the start-up: at its first write to the store (armed
        // before the daemon starts, so no write of its can come first).
        disk?.aim(SIGHUP)
        daemon = try DaemonProcess(directory: directory, environment: environment)
        try powerCycle(disk, aimed: SIGHUP)
    }
    daemon = try DaemonProcess(directory: directory, environment: environment)
    try daemon.waitUntilServing()
    restarts.append(BenchmarkSupport.now() - begin)
    print(
        "\(powerCuts ? "power cut" : "kill") \(k + 1) at \(String(format: "%.1f", at - start)) s (\(moment.rawValue)); serving again after \(String(format: "%.2f", restarts.last!)) s"
    )
}

// A stored quota pause, and an auth hold with the events it parked, must outlive a power
// cut: Plunk answers 402 (then 401) until the daemon stops sending, the power goes a moment
// after, and Plunk is healthy again by the restart. A daemon that lost what it stored
// would deliver at once; one that kept it sends nothing until `plunkd resume`, and then
// the parked events are delivered with the rest (the "lost" check below).
// Cuts aimed at the very write that stores a quota pause (402) and that parks an event and
// holds delivery (401): producers held and the daemon idle, one event is sent; the power
// goes at the first write after Plunk's refusal of it is on its way, so that write is lost.
// The store must open, and the event (never delivered) must still be delivered later.
var refusalCutsThatFell: [Int: Bool] = [:]
if let disk {
    for status in [402, 401] {
        // The backlog drains without injected failures, so the daemon is soon idle.
        producers.hold(true)
        fake.heal()
        let idle = Poll.blockingUntil(timeout: 120, every: .milliseconds(100)) { pendingEvents(daemon) == 0 }
        fake.resumeFailing()
        fake.refuseAll(status)
        if let cutfs = disk.pid { fake.beforeNextRefusal { kill(cutfs, SIGHUP) } }
        let contact = "refused-\(status)@soak.example"
        if idle, let client = try? BlockingUnixSocket(path: daemon.socketPath, receiveTimeout: 10) {
            try client.write(#"{"event":"aimed-\#(status)","email":"\#(contact)"}"# + "\n")
            if let line = try client.readLine(), let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                object["ok"] as? Bool == true, let id = object["id"] as? String
            {
                producers.noteAcknowledged(id: id, contact: contact)
            }
        }
        let fell = try disk.cut(aimedWithin: 10)
        refusalCutsThatFell[status] = idle && fell
        daemon.signal(SIGKILL)
        daemon.waitForExit(timeout: 30)
        fake.beginEpoch()
        fake.refuseAll(nil)
        disk.unmount()
        try disk.mount()
        daemon = try DaemonProcess(directory: directory, environment: environment)
        try daemon.waitUntilServing()
        // A hold or pause that did reach the disk before the cut (the aimed write was
        // another) is lifted, as an operator would.
        _ = try DaemonProcess.command(["resume", "--socket", daemon.socketPath])
        producers.hold(false)
    }
}

func pendingEvents(_ daemon: DaemonProcess) -> Int? {
    guard let run = try? DaemonProcess.command(["status", "--json", "--socket", daemon.socketPath]),
        let object = try? JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any]
    else { return nil }
    return object["pending"] as? Int
}

var stopsKept: [String: Bool] = [:]
if let disk {
    for (status, state) in [(402, "quota_paused"), (401, "auth_held")] {
        fake.refuseAll(status)
        let stopped = Poll.blockingUntil(timeout: 30, every: .milliseconds(100)) { deliveryState(daemon) == state }
        usleep(1_000_000)
        fake.refuseAll(nil)
        try powerCycle(disk, aimed: nil)
        daemon = try DaemonProcess(directory: directory, environment: environment)
        try daemon.waitUntilServing()
        let before = fake.snapshot.requests
        usleep(3_000_000)
        stopsKept[state] = stopped && fake.snapshot.requests == before && deliveryState(daemon) == state
        _ = try DaemonProcess.command(["resume", "--socket", daemon.socketPath])
    }
}

func deliveryState(_ daemon: DaemonProcess) -> String? {
    guard let run = try? DaemonProcess.command(["status", "--json", "--socket", daemon.socketPath]),
        let object = try? JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any]
    else { return nil }
    return object["state"] as? String
}

let remaining = start + Double(seconds) - BenchmarkSupport.now()
if remaining > 0 { usleep(UInt32(remaining * 1e6)) }
// A total outage, producers still writing: the daemon must fall back to one probe at a
// time, spaced by backoff (at most 1 s here), not retry as fast as answers come back.
watch?.stop()
fake.outage(true)
usleep(UInt32(outageSeconds) * 1_000_000)
fake.outage(false)
producers.stop()
let acked = producers.acknowledged

// Drain: the stand-in stops failing; every acknowledged id must reach it with a 2xx.
fake.heal()
let drainStart = BenchmarkSupport.now()
var lastProgress = drainStart
var missingCount = acked.subtracting(fake.snapshot.deliveries.keys).count
while missingCount > 0 && BenchmarkSupport.now() - lastProgress < drainStall {
    usleep(200_000)
    let now = acked.subtracting(fake.snapshot.deliveries.keys).count
    if now < missingCount { lastProgress = BenchmarkSupport.now() }
    missingCount = now
}
daemon.signal(SIGTERM)
let exit = daemon.waitForExit(timeout: 30)
let tally = fake.snapshot
await fake.stop()
let missing = acked.subtracting(tally.deliveries.keys)

let duplicated = tally.deliveries.values.reduce(0) { $0 + max(0, $1 - 1) }
// A duplicate sent again by a later daemon belongs to the one that first delivered it and
// died before recording that: what one crash sent twice. One sent again by the same
// daemon followed a timeout (a slow 2xx that reached the socket as the daemon gave up),
// which the README allows, one per timed-out request.
let duplicatesPerCrash = tally.duplicatesAfterCrash
let worstCrash = duplicatesPerCrash.values.max() ?? 0
let unacknowledgedDelivered = Set(tally.deliveries.keys).subtracting(acked).count
// Per-contact order: each contact's acknowledged ids must reach the stand-in (first 2xx
// of each) in the order they were acknowledged.
var deliveredByContact: [String: [String]] = [:]
for delivery in tally.firstDeliveries where acked.contains(delivery.id) {
    deliveredByContact[delivery.email, default: []].append(delivery.id)
}
let outOfOrder = producers.acknowledgedByContact.filter { contact, ids in deliveredByContact[contact, default: []] != ids }.count
let peak = tally.requestsPerSecond.values.max() ?? 0
let peakWhileFailing = tally.requestsPerSecondWhileFailing.values.max() ?? 0
let rateBound = concurrency * 1000 / Int(fake.minimumDelay.nanoseconds / 1_000_000) + concurrency
// In flight, plus answered and not yet committed: the claim (slots and a reserve as large)
// bounds the two together at twice the concurrency (`DuplicateBoundTests`).
let perCrashBound = 2 * concurrency
// Before probing: the requests sent after the outage began until 8 sent one after another
// have failed, at most those 8 and a round in flight behind them (2 × concurrency). Then
// one probe at a time, spaced by a backoff that starts at 50 ms and doubles to 1 s with
// full jitter: 8 in the first second at most, and on average 2 a second after it (4
// allowed). A sender that kept retrying would send up to concurrency / minimumDelay, 800
// per second (662 in 5 s, measured); the exact budget on the shipped settings is
// `OutageBudgetTests`. Runs of failures taken in answer order sent up to 64 here (and 113
// in `OutageShapeTests`), under a looser bound of 3 × concurrency + 8 + 6 a second: slow
// 2xx to requests sent before the outage reset each run and ended probing. Taken in send
// order (`DestinationGate.failedTransiently`), 19 soaks gave 18 to 26, and the replay at
// most 27 over 120 seeds.
let outageBound = 2 * concurrency + 8 + 4 * outageSeconds

BenchmarkSupport.show("events acknowledged", "\(acked.count)")
BenchmarkSupport.show("delivered (2xx at the stand-in, distinct ids)", "\(tally.deliveries.count)")
BenchmarkSupport.show("  of which never acknowledged (stored, ack lost in a kill)", "\(unacknowledgedDelivered)")
BenchmarkSupport.show("lost (acknowledged, never delivered)", "\(missing.count)")
BenchmarkSupport.show("contacts delivered out of acknowledgement order", "\(outOfOrder) of \(producers.acknowledgedByContact.count)")
BenchmarkSupport.show(
    "duplicated deliveries", "\(duplicated); worst crash \(worstCrash) (bound per crash: 2 × concurrency = \(perCrashBound))")
BenchmarkSupport.show("  of which sent again by the same daemon (after a timeout)", "\(tally.duplicatesAfterTimeout)")
BenchmarkSupport.show("2xx answered slowly (\(fake.slowSuccessDelay.nanoseconds / 1_000_000) ms)", "\(tally.slowSuccesses)")
if !restarts.isEmpty {
    BenchmarkSupport.show("kills", "\(kills); restart to serving median \(String(format: "%.2f", restarts.sorted()[restarts.count / 2])) s")
}
BenchmarkSupport.show("requests / failures injected", "\(tally.requests) / \(tally.failuresInjected)")
BenchmarkSupport.show("peak request rate, failing phase / drain", "\(peakWhileFailing)/s / \(peak)/s (bound: \(rateBound)/s)")
BenchmarkSupport.show("requests during a \(outageSeconds) s total outage", "\(tally.requestsDuringOutage) (bound: \(outageBound))")
if let disk {
    BenchmarkSupport.show("unsynced bytes the power cuts threw away", "\(disk.bytesLost)")
    BenchmarkSupport.show(
        "aimed cuts that fell where aimed",
        "checkpoint \(aimedCutsThatFell[.checkpoint] ?? 0), start-up \(aimedCutsThatFell[.startUp] ?? 0) (of \(aimedCutsExpected[.checkpoint] ?? 0) and \(aimedCutsExpected[.startUp] ?? 0))"
    )
    BenchmarkSupport.show(
        "cuts at the write after a 402 / a 401 (the pause, the park)",
        [402, 401].map { refusalCutsThatFell[$0] == true ? "fell" : "missed" }.joined(separator: " / "))
    for state in ["quota_paused", "auth_held"] {
        BenchmarkSupport.show("\(state) stored, kept across a cut", stopsKept[state] == true ? "yes" : "NO")
    }
}
BenchmarkSupport.show("retryable refusals seen by producers", "\(producers.retryableRefusals)")
BenchmarkSupport.show(
    "drain after the last kill",
    "\(String(format: "%.1f", BenchmarkSupport.now() - drainStart)) s (ends after \(Int(drainStall)) s without progress); SIGTERM exit \(exit.map(String.init) ?? "none")"
)

var failures: [String] = []
if acked.isEmpty { failures.append("no event was acknowledged") }
if !missing.isEmpty { failures.append("\(missing.count) acknowledged events lost, e.g. \(missing.prefix(3).joined(separator: ", "))") }
if outOfOrder > 0 { failures.append("\(outOfOrder) contacts received their events out of order") }
if worstCrash > perCrashBound { failures.append("one crash made \(worstCrash) duplicates, over \(perCrashBound)") }
// Each aimed cut that did not fall left its moment untested (a random cut stood in).
for moment in [CutMoment.checkpoint, .startUp] where powerCuts && aimedCutsThatFell[moment, default: 0] < aimedCutsExpected[moment, default: 0] {
    failures.append(
        "\(aimedCutsExpected[moment, default: 0] - aimedCutsThatFell[moment, default: 0]) cuts aimed at the \(moment.rawValue) did not fall: that moment went untested"
    )
}
for status in [402, 401] where powerCuts && refusalCutsThatFell[status] != true {
    failures.append("the cut aimed at the write after a \(status) did not fall (the daemon never idle, or nothing written): that moment went untested")
}
if tally.duplicatesAfterTimeout > tally.slowSuccesses {
    failures.append("\(tally.duplicatesAfterTimeout) duplicates from one daemon, more than the \(tally.slowSuccesses) slow answers that could time out")
}
if let watch {
    if let growth = watch.growth() {
        BenchmarkSupport.show(
            "growth, 2nd quarter to last (medians)",
            "rss \(growth.residentKB) KB, anon \(growth.anonymousKB) KB, fds \(growth.descriptors), threads \(growth.threads)")
        if growth.residentKB > 5 * 1024 { failures.append("resident memory grew \(growth.residentKB) KB") }
        if growth.descriptors > 4 { failures.append("open descriptors grew by \(growth.descriptors)") }
        if growth.threads > 2 { failures.append("threads grew by \(growth.threads)") }
    } else {
        failures.append("too few resource samples to judge: \(watch.samples.count)")
    }
}
if peak > rateBound { failures.append("peak rate \(peak)/s exceeds \(rateBound)/s") }
if tally.requestsDuringOutage > outageBound {
    failures.append("\(tally.requestsDuringOutage) requests in a \(outageSeconds) s outage exceed \(outageBound): a retry storm")
}
for (state, kept) in stopsKept where !kept { failures.append("\(state), stored before a power cut, was not in force after it") }
if let disk, disk.bytesLost == 0 { failures.append("the power cuts found nothing unsynced to throw away: they proved nothing") }
if exit != 0 { failures.append("the last daemon did not exit 0 on SIGTERM: \(daemon.log.suffix(500))") }
disk?.unmount()
if failures.isEmpty {
    print("PASS")
    daemon.cleanUp()
} else {
    print("FAIL: " + failures.joined(separator: "; "))
    print("daemon directory kept: \(directory)")
    Foundation.exit(1)
}
