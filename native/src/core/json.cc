// Strict recursive-descent JSON parser; see json.h for what "strict" covers.
#include "core/json.h"

#include <charconv>
#include <cmath>
#include <limits>
#include <unordered_set>

namespace tg {

namespace {

// Deep enough for any real header, shallow enough that recursion cannot
// exhaust the stack on hostile input like "[[[[...".
constexpr int kMaxDepth = 128;

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// Estimates whether an out-of-range decimal overflowed (true) or underflowed:
// the power of ten of its first significant digit, plus the exponent.
bool DecimalOverflows(std::string_view text) {
  size_t i = text[0] == '-' ? 1 : 0;
  int64_t point = 0;  // digits before the decimal point, after leading zeros
  int64_t leading_fraction_zeros = 0;
  bool seen_significant = false;
  for (; i < text.size() && IsDigit(text[i]); ++i) {
    if (text[i] != '0') seen_significant = true;
    if (seen_significant) ++point;
  }
  if (i < text.size() && text[i] == '.') {
    for (++i; i < text.size() && IsDigit(text[i]); ++i) {
      if (text[i] != '0') seen_significant = true;
      if (!seen_significant) ++leading_fraction_zeros;
    }
  }
  int64_t exponent = 0;
  if (i < text.size() && (text[i] == 'e' || text[i] == 'E')) {
    ++i;
    bool negative = false;
    if (text[i] == '+' || text[i] == '-') negative = text[i++] == '-';
    for (; i < text.size(); ++i) {
      if (exponent < 1000000) exponent = exponent * 10 + (text[i] - '0');
    }
    if (negative) exponent = -exponent;
  }
  int64_t magnitude = (point > 0 ? point : -leading_fraction_zeros) + exponent;
  return magnitude > 0;
}

class Parser {
 public:
  explicit Parser(std::string_view text) : text_(text) {}

  JsonValue ParseDocument() {
    SkipWhitespace();
    JsonValue value = ParseValue(0);
    SkipWhitespace();
    if (pos_ != text_.size()) Fail("unexpected data after the JSON value");
    return value;
  }

 private:
  [[noreturn]] void Fail(const std::string& what) const { FailAt(what, pos_); }
  [[noreturn]] void FailAt(const std::string& what, size_t offset) const {
    throw JsonError(what + " at byte " + std::to_string(offset), offset);
  }

  bool AtEnd() const { return pos_ >= text_.size(); }
  char Peek() const { return AtEnd() ? '\0' : text_[pos_]; }

  void SkipWhitespace() {
    while (!AtEnd()) {
      char c = text_[pos_];
      if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
      ++pos_;
    }
  }

  void Expect(char c) {
    if (Peek() != c || AtEnd()) Fail(std::string("expected '") + c + "'");
    ++pos_;
  }

  void ExpectWord(std::string_view word) {
    if (text_.substr(pos_, word.size()) != word) Fail("invalid literal");
    pos_ += word.size();
  }

  JsonValue ParseValue(int depth) {
    if (AtEnd()) Fail("unexpected end of input");
    switch (text_[pos_]) {
      case '{': return ParseObject(depth + 1);
      case '[': return ParseArray(depth + 1);
      case '"': return JsonValue::String(ParseString());
      case 't': ExpectWord("true"); return JsonValue::Bool(true);
      case 'f': ExpectWord("false"); return JsonValue::Bool(false);
      case 'n': ExpectWord("null"); return JsonValue();
      default:
        if (text_[pos_] == '-' || IsDigit(text_[pos_])) return ParseNumber();
        Fail("unexpected character");
    }
  }

  JsonValue ParseObject(int depth) {
    if (depth > kMaxDepth) Fail("nesting deeper than " + std::to_string(kMaxDepth));
    Expect('{');
    JsonValue::Object members;
    std::unordered_set<std::string> keys;
    SkipWhitespace();
    if (Peek() == '}' && !AtEnd()) {
      ++pos_;
      return JsonValue::MakeObject(std::move(members));
    }
    for (;;) {
      SkipWhitespace();
      size_t key_offset = pos_;
      if (Peek() != '"' || AtEnd()) Fail("expected a string key");
      std::string key = ParseString();
      if (!keys.insert(key).second) FailAt("duplicate key \"" + key + "\"", key_offset);
      SkipWhitespace();
      Expect(':');
      SkipWhitespace();
      JsonValue value = ParseValue(depth);
      members.emplace_back(std::move(key), std::move(value));
      SkipWhitespace();
      if (Peek() == ',' && !AtEnd()) {
        ++pos_;
        continue;
      }
      Expect('}');
      return JsonValue::MakeObject(std::move(members));
    }
  }

  JsonValue ParseArray(int depth) {
    if (depth > kMaxDepth) Fail("nesting deeper than " + std::to_string(kMaxDepth));
    Expect('[');
    JsonValue::Array items;
    SkipWhitespace();
    if (Peek() == ']' && !AtEnd()) {
      ++pos_;
      return JsonValue::MakeArray(std::move(items));
    }
    for (;;) {
      SkipWhitespace();
      items.push_back(ParseValue(depth));
      SkipWhitespace();
      if (Peek() == ',' && !AtEnd()) {
        ++pos_;
        continue;
      }
      Expect(']');
      return JsonValue::MakeArray(std::move(items));
    }
  }

  uint32_t ParseHex4() {
    if (text_.size() - pos_ < 4) Fail("truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      char c = text_[pos_++];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= static_cast<uint32_t>(c - '0');
      else if (c >= 'a' && c <= 'f') v |= static_cast<uint32_t>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= static_cast<uint32_t>(c - 'A' + 10);
      else FailAt("invalid hex digit in \\u escape", pos_ - 1);
    }
    return v;
  }

  static void AppendUtf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  // Copies one well-formed UTF-8 sequence starting at a byte >= 0x80.
  void CopyUtf8Sequence(std::string& out) {
    size_t start = pos_;
    auto byte = [&](size_t i) { return static_cast<unsigned char>(text_[i]); };
    unsigned char b0 = byte(pos_);
    size_t len;
    uint32_t cp;
    if (b0 >= 0xC2 && b0 <= 0xDF) { len = 2; cp = b0 & 0x1F; }
    else if (b0 >= 0xE0 && b0 <= 0xEF) { len = 3; cp = b0 & 0x0F; }
    else if (b0 >= 0xF0 && b0 <= 0xF4) { len = 4; cp = b0 & 0x07; }
    else FailAt("invalid UTF-8", start);
    if (text_.size() - pos_ < len) FailAt("truncated UTF-8 sequence", start);
    for (size_t i = 1; i < len; ++i) {
      unsigned char b = byte(pos_ + i);
      if ((b & 0xC0) != 0x80) FailAt("invalid UTF-8", start);
      cp = (cp << 6) | (b & 0x3F);
    }
    // Overlong forms, UTF-16 surrogates and code points past U+10FFFF.
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
      FailAt("invalid UTF-8", start);
    }
    out.append(text_.substr(pos_, len));
    pos_ += len;
  }

  std::string ParseString() {
    Expect('"');
    std::string out;
    for (;;) {
      if (AtEnd()) Fail("unterminated string");
      unsigned char c = static_cast<unsigned char>(text_[pos_]);
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (c < 0x20) Fail("control character in string");
      if (c >= 0x80) {
        CopyUtf8Sequence(out);
        continue;
      }
      if (c != '\\') {
        out += static_cast<char>(c);
        ++pos_;
        continue;
      }
      size_t escape_offset = pos_;
      ++pos_;
      if (AtEnd()) Fail("unterminated string");
      char e = text_[pos_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = ParseHex4();
          if (cp >= 0xDC00 && cp <= 0xDFFF) FailAt("unpaired low surrogate", escape_offset);
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (text_.substr(pos_, 2) != "\\u") FailAt("unpaired high surrogate", escape_offset);
            pos_ += 2;
            uint32_t low = ParseHex4();
            if (low < 0xDC00 || low > 0xDFFF) FailAt("unpaired high surrogate", escape_offset);
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          }
          AppendUtf8(out, cp);
          break;
        }
        default: FailAt("invalid escape", escape_offset);
      }
    }
  }

  JsonValue ParseNumber() {
    size_t start = pos_;
    if (Peek() == '-') ++pos_;
    if (!IsDigit(Peek()) || AtEnd()) Fail("expected a digit");
    if (text_[pos_] == '0') {
      ++pos_;
      if (IsDigit(Peek()) && !AtEnd()) Fail("leading zero in number");
    } else {
      while (!AtEnd() && IsDigit(text_[pos_])) ++pos_;
    }
    if (Peek() == '.' && !AtEnd()) {
      ++pos_;
      if (AtEnd() || !IsDigit(text_[pos_])) Fail("expected a digit after '.'");
      while (!AtEnd() && IsDigit(text_[pos_])) ++pos_;
    }
    if (!AtEnd() && (text_[pos_] == 'e' || text_[pos_] == 'E')) {
      ++pos_;
      if (!AtEnd() && (text_[pos_] == '+' || text_[pos_] == '-')) ++pos_;
      if (AtEnd() || !IsDigit(text_[pos_])) Fail("expected a digit in exponent");
      while (!AtEnd() && IsDigit(text_[pos_])) ++pos_;
    }
    return JsonValue::Number(text_.substr(start, pos_ - start));
  }

  std::string_view text_;
  size_t pos_ = 0;
};

}  // namespace

JsonValue JsonValue::Bool(bool b) {
  JsonValue v;
  v.kind_ = Kind::kBool;
  v.bool_ = b;
  return v;
}

JsonValue JsonValue::String(std::string s) {
  JsonValue v;
  v.kind_ = Kind::kString;
  v.string_ = std::move(s);
  return v;
}

JsonValue JsonValue::MakeArray(Array a) {
  JsonValue v;
  v.kind_ = Kind::kArray;
  v.array_ = std::move(a);
  return v;
}

JsonValue JsonValue::MakeObject(Object o) {
  JsonValue v;
  v.kind_ = Kind::kObject;
  v.object_ = std::move(o);
  return v;
}

JsonValue JsonValue::Number(std::string_view text) {
  JsonValue v;
  v.kind_ = Kind::kNumber;
  const char* first = text.data();
  const char* last = text.data() + text.size();
  auto [end, ec] = std::from_chars(first, last, v.number_);
  if (ec == std::errc::result_out_of_range) {
    bool negative = text[0] == '-';
    double magnitude = DecimalOverflows(text) ? std::numeric_limits<double>::infinity() : 0.0;
    v.number_ = negative ? -magnitude : magnitude;
  } else if (ec != std::errc() || end != last) {
    throw std::logic_error("JsonValue::Number: not a JSON number: " + std::string(text));
  }
  if (text.find_first_of(".eE") != std::string_view::npos) return v;

  // Integer syntax: accumulate the magnitude exactly, giving up past 2^64 - 1.
  bool negative = text[0] == '-';
  uint64_t magnitude = 0;
  for (size_t i = negative ? 1 : 0; i < text.size(); ++i) {
    uint64_t digit = static_cast<uint64_t>(text[i] - '0');
    if (magnitude > (std::numeric_limits<uint64_t>::max() - digit) / 10) return v;
    magnitude = magnitude * 10 + digit;
  }
  constexpr uint64_t kInt64Max = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  if (negative) {
    if (magnitude <= kInt64Max) {
      v.int_form_ = IntForm::kSigned;
      v.int_ = -static_cast<int64_t>(magnitude);
    } else if (magnitude == kInt64Max + 1) {
      v.int_form_ = IntForm::kSigned;
      v.int_ = std::numeric_limits<int64_t>::min();
    }
  } else if (magnitude <= kInt64Max) {
    v.int_form_ = IntForm::kSigned;
    v.int_ = static_cast<int64_t>(magnitude);
  } else {
    v.int_form_ = IntForm::kUnsigned;
    v.uint_ = magnitude;
  }
  return v;
}

const char* JsonValue::KindName() const {
  switch (kind_) {
    case Kind::kNull: return "null";
    case Kind::kBool: return "a boolean";
    case Kind::kNumber: return "a number";
    case Kind::kString: return "a string";
    case Kind::kArray: return "an array";
    case Kind::kObject: return "an object";
  }
  return "?";
}

bool JsonValue::AsBool() const {
  if (kind_ != Kind::kBool) throw std::logic_error(std::string("JSON value is ") + KindName() + ", not a boolean");
  return bool_;
}

const std::string& JsonValue::AsString() const {
  if (kind_ != Kind::kString) throw std::logic_error(std::string("JSON value is ") + KindName() + ", not a string");
  return string_;
}

const JsonValue::Array& JsonValue::AsArray() const {
  if (kind_ != Kind::kArray) throw std::logic_error(std::string("JSON value is ") + KindName() + ", not an array");
  return array_;
}

const JsonValue::Object& JsonValue::AsObject() const {
  if (kind_ != Kind::kObject) throw std::logic_error(std::string("JSON value is ") + KindName() + ", not an object");
  return object_;
}

double JsonValue::AsDouble() const {
  if (kind_ != Kind::kNumber) throw std::logic_error(std::string("JSON value is ") + KindName() + ", not a number");
  return number_;
}

std::optional<int64_t> JsonValue::AsInt64() const {
  if (kind_ != Kind::kNumber || int_form_ != IntForm::kSigned) return std::nullopt;
  return int_;
}

std::optional<uint64_t> JsonValue::AsUint64() const {
  if (kind_ != Kind::kNumber) return std::nullopt;
  if (int_form_ == IntForm::kUnsigned) return uint_;
  if (int_form_ == IntForm::kSigned && int_ >= 0) return static_cast<uint64_t>(int_);
  return std::nullopt;
}

const JsonValue* JsonValue::Find(std::string_view key) const {
  if (kind_ != Kind::kObject) return nullptr;
  for (const auto& [k, v] : object_) {
    if (k == key) return &v;
  }
  return nullptr;
}

JsonValue ParseJson(std::string_view text) { return Parser(text).ParseDocument(); }

}  // namespace tg
