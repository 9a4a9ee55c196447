import SwiftUI
import ZooCore

enum AppTab: Hashable {
    case restore
    case benchmark
}

struct ContentView: View {
    let launch: LaunchState
    @State private var tab: AppTab = .restore
    @State private var benchmark = BenchmarkController()
    @State private var started = false

    var body: some View {
        TabView(selection: $tab) {
            RestoreView()
                .tabItem { Label("Restore", systemImage: "wand.and.stars") }
                .tag(AppTab.restore)
            BenchmarkView(controller: benchmark)
                .tabItem { Label("Benchmark", systemImage: "speedometer") }
                .tag(AppTab.benchmark)
        }
        .task {
            // `-benchmark <folder>` on the command line: open the benchmark and run it once.
            guard !started else { return }
            started = true
            if let error = launch.error {
                tab = .benchmark
                benchmark.errorMessage = error
            } else if launch.options.benchmarkFolder != nil {
                tab = .benchmark
                benchmark.reload()
                benchmark.start(options: launch.options)
            }
        }
    }
}
