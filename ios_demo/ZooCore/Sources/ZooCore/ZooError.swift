import Foundation

/// A problem the user can fix: one line naming the problem and the fix, like the Python
/// side's `zoo.errors.ZooError` (`"problem; fix"`).
public struct ZooError: Error, LocalizedError, CustomStringConvertible, Equatable, Sendable {
    public let problem: String
    public let fix: String?

    public init(_ problem: String, fix: String? = nil) {
        self.problem = problem
        self.fix = fix
    }

    public var description: String {
        guard let fix, !fix.isEmpty else { return problem }
        return "\(problem); \(fix)"
    }

    public var errorDescription: String? { description }
}

/// Any JSON value, for the free-form objects of the formats (`backend.options` of a manifest,
/// `runtime.options` of a results record, quantization details).
public enum JSONValue: Codable, Equatable, Sendable {
    case null
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int.self) {
            self = .int(value)
        } else if let value = try? container.decode(Double.self) {
            self = .double(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else if let value = try? container.decode([String: JSONValue].self) {
            self = .object(value)
        } else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "not a JSON value")
        }
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .int(let value): try container.encode(value)
        case .double(let value): try container.encode(value)
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }

    /// The text when the value is a JSON string (nothing converted), else nil.
    public var stringCase: String? {
        if case .string(let value) = self { return value }
        return nil
    }

    /// The integer when the value is a JSON integer, else nil.
    public var intCase: Int? {
        if case .int(let value) = self { return value }
        return nil
    }

    /// The members when the value is a JSON object, else nil.
    public var objectCase: [String: JSONValue]? {
        if case .object(let value) = self { return value }
        return nil
    }

    public var isNull: Bool { self == .null }

    /// The value as the Python side's messages show it: 'text', 3, 2.5, true, null, an array, an object.
    public var messageText: String {
        switch self {
        case .null: return "null"
        case .bool(let value): return value ? "true" : "false"
        case .int(let value): return String(value)
        case .double(let value): return String(value)
        case .string(let value): return "'\(value)'"
        case .array: return "an array"
        case .object: return "an object"
        }
    }

    /// The value as text when it is a string (or a number / bool written as text), else nil.
    public var stringValue: String? {
        switch self {
        case .string(let value): return value
        case .int(let value): return String(value)
        case .double(let value): return String(value)
        case .bool(let value): return value ? "true" : "false"
        default: return nil
        }
    }
}

/// Decodes a `String`-backed enum and names the valid values when the text is not one of them
/// (`'bfloat16' is not one of 'float32', 'float16', 'int8', 'uint8'`). Each schema enum calls it
/// from its own `init(from:)`.
func decodeSchemaEnum<T>(_ decoder: Decoder) throws -> T
where T: RawRepresentable & CaseIterable, T.RawValue == String {
    let container = try decoder.singleValueContainer()
    let raw = try container.decode(String.self)
    guard let value = T(rawValue: raw) else {
        let valid = T.allCases.map { "'\($0.rawValue)'" }.joined(separator: ", ")
        throw DecodingError.dataCorruptedError(
            in: container, debugDescription: "'\(raw)' is not one of \(valid)")
    }
    return value
}

/// `records[0].latency_ms.median` / `inputs[0].dtype`: a coding path as the Python side writes it.
func fieldPath(_ codingPath: [CodingKey]) -> String {
    var text = ""
    for key in codingPath {
        if let index = key.intValue {
            text += "[\(index)]"
        } else {
            text += text.isEmpty ? key.stringValue : ".\(key.stringValue)"
        }
    }
    return text.isEmpty ? "(top level)" : text
}

/// One line for a JSON decoding error, naming the field: `field inputs[0].dtype: ...`.
func describeDecodingError(_ error: Error) -> String {
    guard let error = error as? DecodingError else { return error.localizedDescription }
    switch error {
    case .keyNotFound(let key, let context):
        return "field \(fieldPath(context.codingPath + [key])) is missing"
    case .valueNotFound(let type, let context):
        return "field \(fieldPath(context.codingPath)) is null, expected \(type)"
    case .typeMismatch(let type, let context):
        return "field \(fieldPath(context.codingPath)) is not a \(type)"
    case .dataCorrupted(let context):
        if context.codingPath.isEmpty {
            return "not valid JSON (\(context.debugDescription))"
        }
        return "field \(fieldPath(context.codingPath)): \(context.debugDescription)"
    @unknown default:
        return error.localizedDescription
    }
}
