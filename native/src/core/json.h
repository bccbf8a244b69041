// A small strict JSON parser (RFC 8259) for the files the engine reads itself:
// safetensors headers and model.safetensors.index.json. Input is untrusted, so
// parsing is bounded (nesting depth), rejects duplicate keys and invalid UTF-8,
// and keeps integers exact up to 64 bits (tensor offsets need more than a double).
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tg {

// A syntax error; offset() is the byte in the input where parsing stopped.
class JsonError : public std::runtime_error {
 public:
  JsonError(const std::string& what, size_t offset) : std::runtime_error(what), offset_(offset) {}
  size_t offset() const { return offset_; }

 private:
  size_t offset_;
};

class JsonValue {
 public:
  enum class Kind { kNull, kBool, kNumber, kString, kArray, kObject };
  using Array = std::vector<JsonValue>;
  // Members in document order; keys are unique.
  using Object = std::vector<std::pair<std::string, JsonValue>>;

  JsonValue() = default;  // null
  static JsonValue Bool(bool b);
  static JsonValue String(std::string s);
  static JsonValue MakeArray(Array a);
  static JsonValue MakeObject(Object o);
  // `text` is the number as written; it must be valid JSON number syntax.
  static JsonValue Number(std::string_view text);

  Kind kind() const { return kind_; }
  bool IsNull() const { return kind_ == Kind::kNull; }
  bool IsBool() const { return kind_ == Kind::kBool; }
  bool IsNumber() const { return kind_ == Kind::kNumber; }
  bool IsString() const { return kind_ == Kind::kString; }
  bool IsArray() const { return kind_ == Kind::kArray; }
  bool IsObject() const { return kind_ == Kind::kObject; }
  // "null", "a boolean", "a number", ... for error messages.
  const char* KindName() const;

  // These throw std::logic_error when the value is of another kind.
  bool AsBool() const;
  const std::string& AsString() const;
  const Array& AsArray() const;
  const Object& AsObject() const;
  // Any number, possibly rounded.
  double AsDouble() const;

  // The exact value when the number was written as an integer (no fraction or
  // exponent) that fits; nullopt otherwise (including for non-numbers).
  std::optional<int64_t> AsInt64() const;
  std::optional<uint64_t> AsUint64() const;

  // The member named `key` of an object; nullptr when absent or not an object.
  const JsonValue* Find(std::string_view key) const;

 private:
  enum class IntForm { kNone, kSigned, kUnsigned };

  Kind kind_ = Kind::kNull;
  bool bool_ = false;
  double number_ = 0;
  IntForm int_form_ = IntForm::kNone;
  int64_t int_ = 0;    // valid when int_form_ == kSigned
  uint64_t uint_ = 0;  // valid when int_form_ == kUnsigned (value > INT64_MAX)
  std::string string_;
  Array array_;
  Object object_;
};

// Parses exactly one JSON value surrounded by optional whitespace.
// Throws JsonError ("... at byte N") on any deviation from the grammar.
JsonValue ParseJson(std::string_view text);

}  // namespace tg
