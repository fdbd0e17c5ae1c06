import Dispatch
import Foundation
import PlunkdTestSupport

#if canImport(Glibc)
    import Glibc
#endif

/// The soak's own deadline: a run that has not ended by then (a frozen filesystem, a
/// daemon that never answers, a wait someone forgot to bound) releases the store's mount,
/// kills every process it started and exits 1, instead of holding CI until its limit.
final class SoakDeadline {
    private let timer: any DispatchSourceTimer

    init(seconds: Double, mountpoint: String?) {
        timer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "plunkd.soak.deadline"))
        timer.schedule(deadline: .now() + seconds)
        timer.setEventHandler {
            print("FAIL: the soak did not finish within its deadline of \(Int(seconds)) s (--deadline); releasing what it started")
            // The mount first: a daemon blocked on a frozen mount dies only once its
            // connection is aborted.
            if let mountpoint { FuseMount.release(mountpoint) }
            ProcessRecords.killChildrenOfThisProcess()
            if let mountpoint { FuseMount.release(mountpoint) }
            Foundation.exit(1)
        }
        timer.resume()
    }
}
