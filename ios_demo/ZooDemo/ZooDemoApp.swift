import SwiftUI
import ZooCore

/// The launch arguments, parsed once (`-benchmark <folder in Documents> [-runs N] [-warmup W]`).
struct LaunchState {
    let options: LaunchOptions
    let error: String?

    static func fromProcess() -> LaunchState {
        do {
            return LaunchState(options: try LaunchOptions.parse(ProcessInfo.processInfo.arguments), error: nil)
        } catch {
            return LaunchState(options: LaunchOptions(), error: error.localizedDescription)
        }
    }
}

@main
struct ZooDemoApp: App {
    private let launch = LaunchState.fromProcess()

    var body: some Scene {
        WindowGroup {
            ContentView(launch: launch)
        }
    }
}
