import Darwin
import Foundation
import Metal
import UIKit
import ZooCore

/// What the results file says about the phone (`host`) and the memory the benchmark samples.
enum DeviceInfo {
    /// The model identifier, e.g. "iPhone15,2" (the simulator reports the simulated model).
    static var modelIdentifier: String {
        if let simulated = ProcessInfo.processInfo.environment["SIMULATOR_MODEL_IDENTIFIER"] {
            return simulated
        }
        var size = 0
        guard sysctlbyname("hw.machine", nil, &size, nil, 0) == 0, size > 0 else { return "unknown iOS device" }
        var machine = [CChar](repeating: 0, count: size)
        guard sysctlbyname("hw.machine", &machine, &size, nil, 0) == 0 else { return "unknown iOS device" }
        return String(cString: machine)
    }

    static var isSimulator: Bool {
        #if targetEnvironment(simulator)
        return true
        #else
        return false
        #endif
    }

    @MainActor
    static func host() -> ResultHost {
        let device = UIDevice.current
        return ResultHost(
            name: modelIdentifier,
            kind: device.userInterfaceIdiom == .pad ? .tablet : .phone,
            os: "iOS",
            osVersion: device.systemVersion,
            cpu: nil,
            cores: ProcessInfo.processInfo.processorCount,
            gpu: MTLCreateSystemDefaultDevice()?.name,
            soc: nil)
    }

    /// Conditions that change timings, for the record's notes.
    static func conditionNotes() -> [String] {
        let info = ProcessInfo.processInfo
        let thermal: String
        switch info.thermalState {
        case .nominal: thermal = "nominal"
        case .fair: thermal = "fair"
        case .serious: thermal = "serious"
        case .critical: thermal = "critical"
        @unknown default: thermal = "unknown"
        }
        var notes = ["thermal state at the end: \(thermal)", "low power mode: \(info.isLowPowerModeEnabled ? "on" : "off")"]
        if isSimulator {
            notes.append("run in the iOS Simulator: timings are the Mac's, not a phone's")
        }
        return notes
    }

    /// The app's memory footprint in MiB (task_vm_info.phys_footprint, what Xcode's memory
    /// gauge shows), nil when the kernel does not answer.
    static func footprintMB() -> Double? {
        var info = task_vm_info_data_t()
        var count = mach_msg_type_number_t(MemoryLayout<task_vm_info_data_t>.size / MemoryLayout<integer_t>.size)
        let result = withUnsafeMutablePointer(to: &info) { pointer in
            pointer.withMemoryRebound(to: integer_t.self, capacity: Int(count)) { rebound in
                task_info(mach_task_self_, task_flavor_t(TASK_VM_INFO), rebound, &count)
            }
        }
        guard result == KERN_SUCCESS else { return nil }
        return Double(info.phys_footprint) / 1_048_576
    }

    /// The app's Documents folder (visible in the Files app: On My iPhone > Zoo Demo).
    static var documents: URL {
        FileManager.default.urls(for: .documentDirectory, in: .userDomainMask)[0]
    }
}
