import SwiftUI
import ZooCore

/// The benchmark screen: pick a folder of Documents, set runs / warm-up, run, share results.json.
struct BenchmarkView: View {
    @Bindable var controller: BenchmarkController

    var body: some View {
        NavigationStack {
            Form {
                Section {
                    if controller.folders.isEmpty {
                        Text("Copy a benchmark folder into the app's Documents (Files app > On My iPhone > Zoo Demo, or Finder > iPhone > Files): the artifact (.pte or .mlpackage), its manifest.json and images/*.png.")
                            .font(.callout)
                            .foregroundStyle(.secondary)
                    } else {
                        Picker("Folder", selection: $controller.folderName) {
                            ForEach(controller.folders, id: \.self) { name in
                                Text(name).tag(name)
                            }
                        }
                    }
                    Stepper("Timed runs: \(controller.runs)", value: $controller.runs, in: 1...1000, step: 10)
                    Stepper("Warm-up runs: \(controller.warmup)", value: $controller.warmup, in: 0...100)
                    Picker("Core ML compute units", selection: $controller.computeUnits) {
                        Text("As exported").tag(ComputeUnitsOption?.none)
                        ForEach(ComputeUnitsOption.allCases, id: \.self) { units in
                            Text(units.label).tag(Optional(units))
                        }
                    }
                } header: {
                    Text("Benchmark folder in Documents")
                } footer: {
                    Text("Also from the command line: launch with -benchmark <folder> [-runs N] [-warmup W].")
                }

                Section {
                    if controller.isRunning {
                        ProgressView(value: controller.progress)
                        Button("Cancel", role: .cancel) { controller.cancel() }
                    } else {
                        Button {
                            controller.run()
                        } label: {
                            Label("Run benchmark", systemImage: "speedometer")
                        }
                        .disabled(controller.folderName.isEmpty)
                    }
                    if let url = controller.resultsURL {
                        ShareLink(item: url) {
                            Label("Share \(url.lastPathComponent)", systemImage: "square.and.arrow.up")
                        }
                    }
                    if let message = controller.errorMessage {
                        Text(message).font(.footnote).foregroundStyle(.red)
                    }
                }

                if !controller.log.isEmpty {
                    Section("Log") {
                        ForEach(Array(controller.log.enumerated()), id: \.offset) { _, line in
                            Text(line)
                                .font(.system(.footnote, design: .monospaced))
                                .textSelection(.enabled)
                        }
                    }
                }
            }
            .navigationTitle("Benchmark")
            .toolbar {
                Button {
                    controller.reload()
                } label: {
                    Image(systemName: "arrow.clockwise")
                }
                .accessibilityLabel("Rescan Documents")
            }
            .onAppear { controller.reload() }
        }
    }
}
