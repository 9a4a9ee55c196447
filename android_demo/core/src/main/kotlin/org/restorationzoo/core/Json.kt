package org.restorationzoo.core

/**
 * A small JSON reader and writer (RFC 8259), enough for manifest.json and results.json.
 *
 * Values map to Kotlin as: object -> [LinkedHashMap] (key order kept), array -> [List],
 * string -> [String], integer without fraction or exponent -> [Long] (or [Double] past the Long
 * range), other numbers -> [Double], true/false -> [Boolean], null -> null.
 *
 * The writer accepts those types plus [Int], [Float], [Map] and [Iterable]; it refuses NaN and
 * infinities (JSON has none: write null and a note instead).
 */
class JsonException(message: String) : RuntimeException(message)

object Json {
    /** Parse one JSON document; [JsonException] names the line and column of a syntax error. */
    fun parse(text: String): Any? {
        val parser = Parser(text)
        parser.skipWhitespace()
        val value = parser.readValue()
        parser.skipWhitespace()
        if (!parser.atEnd()) parser.fail("unexpected text after the JSON value")
        return value
    }

    /** The JSON text of [value]; `indent` > 0 pretty-prints with that many spaces per level. */
    fun write(value: Any?, indent: Int = 2): String {
        val out = StringBuilder()
        writeValue(out, value, indent, 0)
        return out.toString()
    }

    /** A JSON string literal for [text] (with quotes). */
    fun quote(text: String): String {
        val out = StringBuilder(text.length + 2)
        writeString(out, text)
        return out.toString()
    }

    private fun writeValue(out: StringBuilder, value: Any?, indent: Int, level: Int) {
        when (value) {
            null -> out.append("null")
            is String -> writeString(out, value)
            is Boolean -> out.append(if (value) "true" else "false")
            is Int, is Long, is Short, is Byte -> out.append(value.toString())
            is Float -> writeDouble(out, value.toDouble())
            is Double -> writeDouble(out, value)
            is Number -> writeDouble(out, value.toDouble())
            is Map<*, *> -> {
                if (value.isEmpty()) {
                    out.append("{}")
                    return
                }
                out.append('{')
                var first = true
                for ((key, item) in value) {
                    if (key !is String) throw JsonException("JSON object keys must be strings, not $key")
                    if (!first) out.append(',')
                    first = false
                    newline(out, indent, level + 1)
                    writeString(out, key)
                    out.append(if (indent > 0) ": " else ":")
                    writeValue(out, item, indent, level + 1)
                }
                newline(out, indent, level)
                out.append('}')
            }
            is Iterable<*> -> writeArray(out, value.toList(), indent, level)
            is Array<*> -> writeArray(out, value.toList(), indent, level)
            is DoubleArray -> writeArray(out, value.toList(), indent, level)
            is FloatArray -> writeArray(out, value.toList(), indent, level)
            is IntArray -> writeArray(out, value.toList(), indent, level)
            is LongArray -> writeArray(out, value.toList(), indent, level)
            else -> throw JsonException("cannot write a ${value::class.java.simpleName} as JSON")
        }
    }

    private fun writeArray(out: StringBuilder, items: List<Any?>, indent: Int, level: Int) {
        if (items.isEmpty()) {
            out.append("[]")
            return
        }
        // Arrays of plain numbers stay on one line: short files, readable diffs.
        val flat = items.all { it == null || it is Number || it is Boolean }
        out.append('[')
        items.forEachIndexed { index, item ->
            if (index > 0) out.append(if (flat && indent > 0) ", " else ",")
            if (!flat) newline(out, indent, level + 1)
            writeValue(out, item, indent, level + 1)
        }
        if (!flat) newline(out, indent, level)
        out.append(']')
    }

    private fun newline(out: StringBuilder, indent: Int, level: Int) {
        if (indent <= 0) return
        out.append('\n')
        repeat(indent * level) { out.append(' ') }
    }

    private fun writeDouble(out: StringBuilder, value: Double) {
        if (value.isNaN() || value.isInfinite()) {
            throw JsonException("JSON has no NaN or infinity (got $value): write null and a note instead")
        }
        // Kotlin's shortest round-trip form ("41.7", "1.0E-5") is valid JSON and reads back exactly.
        out.append(value.toString())
    }

    private fun writeString(out: StringBuilder, text: String) {
        out.append('"')
        for (ch in text) {
            when (ch) {
                '"' -> out.append("\\\"")
                '\\' -> out.append("\\\\")
                '\n' -> out.append("\\n")
                '\r' -> out.append("\\r")
                '\t' -> out.append("\\t")
                '\b' -> out.append("\\b")
                '\u000C' -> out.append("\\f")
                else -> if (ch < ' ') {
                    out.append("\\u").append(String.format("%04x", ch.code))
                } else {
                    out.append(ch)
                }
            }
        }
        out.append('"')
    }

    private class Parser(val text: String) {
        var pos = 0

        fun atEnd() = pos >= text.length

        fun fail(problem: String): Nothing {
            var line = 1
            var column = 1
            for (i in 0 until minOf(pos, text.length)) {
                if (text[i] == '\n') {
                    line++
                    column = 1
                } else {
                    column++
                }
            }
            throw JsonException("invalid JSON at line $line, column $column: $problem")
        }

        fun skipWhitespace() {
            while (pos < text.length && (text[pos] == ' ' || text[pos] == '\n' || text[pos] == '\r' || text[pos] == '\t')) pos++
        }

        fun readValue(): Any? {
            if (atEnd()) fail("unexpected end of text")
            return when (val ch = text[pos]) {
                '{' -> readObject()
                '[' -> readArray()
                '"' -> readString()
                't' -> readLiteral("true", true)
                'f' -> readLiteral("false", false)
                'n' -> readLiteral("null", null)
                else -> if (ch == '-' || ch in '0'..'9') readNumber() else fail("unexpected character '$ch'")
            }
        }

        private fun readLiteral(word: String, value: Any?): Any? {
            if (!text.startsWith(word, pos)) fail("unexpected character '${text[pos]}'")
            pos += word.length
            return value
        }

        private fun readObject(): Map<String, Any?> {
            val result = LinkedHashMap<String, Any?>()
            pos++ // {
            skipWhitespace()
            if (!atEnd() && text[pos] == '}') {
                pos++
                return result
            }
            while (true) {
                skipWhitespace()
                if (atEnd() || text[pos] != '"') fail("expected a string key")
                val key = readString()
                skipWhitespace()
                if (atEnd() || text[pos] != ':') fail("expected ':' after key \"$key\"")
                pos++
                skipWhitespace()
                if (result.containsKey(key)) fail("duplicate key \"$key\"")
                result[key] = readValue()
                skipWhitespace()
                if (atEnd()) fail("unterminated object")
                when (text[pos]) {
                    ',' -> pos++
                    '}' -> {
                        pos++
                        return result
                    }
                    else -> fail("expected ',' or '}' in object")
                }
            }
        }

        private fun readArray(): List<Any?> {
            val result = ArrayList<Any?>()
            pos++ // [
            skipWhitespace()
            if (!atEnd() && text[pos] == ']') {
                pos++
                return result
            }
            while (true) {
                skipWhitespace()
                result.add(readValue())
                skipWhitespace()
                if (atEnd()) fail("unterminated array")
                when (text[pos]) {
                    ',' -> pos++
                    ']' -> {
                        pos++
                        return result
                    }
                    else -> fail("expected ',' or ']' in array")
                }
            }
        }

        private fun readString(): String {
            pos++ // opening quote
            val out = StringBuilder()
            while (true) {
                if (atEnd()) fail("unterminated string")
                val ch = text[pos++]
                when {
                    ch == '"' -> return out.toString()
                    ch == '\\' -> {
                        if (atEnd()) fail("unterminated escape")
                        when (val esc = text[pos++]) {
                            '"' -> out.append('"')
                            '\\' -> out.append('\\')
                            '/' -> out.append('/')
                            'b' -> out.append('\b')
                            'f' -> out.append('\u000C')
                            'n' -> out.append('\n')
                            'r' -> out.append('\r')
                            't' -> out.append('\t')
                            'u' -> {
                                if (pos + 4 > text.length) fail("short \\u escape")
                                val hex = text.substring(pos, pos + 4)
                                val code = hex.toIntOrNull(16) ?: fail("bad \\u escape \\u$hex")
                                out.append(code.toChar())
                                pos += 4
                            }
                            else -> fail("bad escape \\$esc")
                        }
                    }
                    ch < ' ' -> fail("control character in string")
                    else -> out.append(ch)
                }
            }
        }

        private fun readNumber(): Any {
            val start = pos
            if (text[pos] == '-') pos++
            if (atEnd()) fail("bad number")
            if (text[pos] == '0') {
                pos++
            } else if (text[pos] in '1'..'9') {
                while (pos < text.length && text[pos] in '0'..'9') pos++
            } else {
                fail("bad number")
            }
            var integral = true
            if (pos < text.length && text[pos] == '.') {
                integral = false
                pos++
                if (atEnd() || text[pos] !in '0'..'9') fail("bad number: digits expected after '.'")
                while (pos < text.length && text[pos] in '0'..'9') pos++
            }
            if (pos < text.length && (text[pos] == 'e' || text[pos] == 'E')) {
                integral = false
                pos++
                if (pos < text.length && (text[pos] == '+' || text[pos] == '-')) pos++
                if (atEnd() || text[pos] !in '0'..'9') fail("bad number: digits expected in the exponent")
                while (pos < text.length && text[pos] in '0'..'9') pos++
            }
            val literal = text.substring(start, pos)
            if (integral) literal.toLongOrNull()?.let { return it }
            return literal.toDouble()
        }
    }
}
