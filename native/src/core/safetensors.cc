// Safetensors layout: an 8-byte little-endian header length N, N bytes of JSON
// ({name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}),
// then the data section that the offsets index into.
#include "core/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>

#include "core/json.h"

namespace tg {

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::ostringstream out;
  out << '[';
  for (size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  out << ']';
  return out.str();
}

namespace {

// Real headers are at most a few MB; the cap stops a hostile length from
// making us parse (or allocate for) the whole file.
constexpr uint64_t kMaxHeaderBytes = 100000000;
constexpr uint64_t kMaxIndexBytes = 100000000;
constexpr const char* kIndexName = "model.safetensors.index.json";
constexpr const char* kSingleName = "model.safetensors";

std::string JoinPath(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  return dir.back() == '/' ? dir + name : dir + "/" + name;
}

bool IsRegularFile(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

[[noreturn]] void Fail(const std::string& path, const std::string& what) {
  throw std::runtime_error(path + ": " + what);
}

[[noreturn]] void FailTensor(const std::string& path, const std::string& tensor, const std::string& what) {
  throw std::runtime_error(path + ": tensor \"" + tensor + "\": " + what);
}

// A weight_map value must name a file directly inside the model dir.
bool IsPlainFileName(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name.find('\\') == std::string::npos && name.find('\0') == std::string::npos;
}

}  // namespace

struct SafetensorsArchive::MappedFile {
  std::string name;
  std::string path;
  void* base = nullptr;
  size_t size = 0;
  std::map<std::string, std::string> metadata;

  MappedFile() = default;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile() {
    if (base != nullptr) ::munmap(base, size);
  }
};

SafetensorsArchive::SafetensorsArchive(const std::string& model_dir) : model_dir_(model_dir) {
  std::string index_path = JoinPath(model_dir, kIndexName);
  if (IsRegularFile(index_path)) {
    OpenIndex(index_path);
  } else if (IsRegularFile(JoinPath(model_dir, kSingleName))) {
    OpenFile(kSingleName);
    SortTensors();
  } else {
    throw std::runtime_error("model dir " + model_dir + " has no " + kSingleName + " or " + kIndexName);
  }
}

void SafetensorsArchive::SortTensors() {
  std::sort(tensors_.begin(), tensors_.end(),
            [](const TensorInfo& a, const TensorInfo& b) { return a.name < b.name; });
  // A name in two files would make the weight ambiguous; sorting puts the pair side by side.
  for (size_t i = 1; i < tensors_.size(); ++i) {
    if (tensors_[i].name == tensors_[i - 1].name) {
      FailTensor(JoinPath(model_dir_, tensors_[i].file), tensors_[i].name,
                 "also in " + JoinPath(model_dir_, tensors_[i - 1].file) + "; a tensor may appear in only one file");
    }
  }
}

SafetensorsArchive::~SafetensorsArchive() = default;

void SafetensorsArchive::OpenIndex(const std::string& index_path) {
  std::ifstream in(index_path, std::ios::binary);
  if (!in) Fail(index_path, std::string("cannot open: ") + std::strerror(errno));
  std::string text;
  char buffer[65536];
  while (in.read(buffer, sizeof buffer) || in.gcount() > 0) {
    text.append(buffer, static_cast<size_t>(in.gcount()));
    if (text.size() > kMaxIndexBytes) Fail(index_path, "larger than " + std::to_string(kMaxIndexBytes) + " bytes");
  }
  if (in.bad()) Fail(index_path, "read error");

  JsonValue index;
  try {
    index = ParseJson(text);
  } catch (const JsonError& e) {
    Fail(index_path, std::string("not valid JSON: ") + e.what());
  }
  if (!index.IsObject()) Fail(index_path, std::string("is ") + index.KindName() + ", not a JSON object");
  const JsonValue* weight_map = index.Find("weight_map");
  if (weight_map == nullptr) Fail(index_path, "has no \"weight_map\"");
  if (!weight_map->IsObject()) Fail(index_path, std::string("\"weight_map\" is ") + weight_map->KindName() + ", not an object");
  if (weight_map->AsObject().empty()) Fail(index_path, "\"weight_map\" lists no tensors");

  // file name -> first tensor mapped to it (for messages about the file).
  std::map<std::string, std::string> files;
  for (const auto& [tensor, file] : weight_map->AsObject()) {
    if (!file.IsString()) FailTensor(index_path, tensor, std::string("weight_map value is ") + file.KindName() + ", not a file name");
    const std::string& name = file.AsString();
    if (!IsPlainFileName(name)) FailTensor(index_path, tensor, "mapped to \"" + name + "\", which is not a file name inside the model dir");
    files.emplace(name, tensor);
  }
  for (const auto& [name, tensor] : files) {
    std::string path = JoinPath(model_dir_, name);
    if (!IsRegularFile(path)) FailTensor(index_path, tensor, "mapped to missing file " + path);
    OpenFile(name);
  }

  SortTensors();
  for (const auto& [tensor, file] : weight_map->AsObject()) {
    const TensorInfo* held = Find(tensor);
    if (held == nullptr || held->file != file.AsString()) {
      FailTensor(index_path, tensor,
                 "mapped to " + JoinPath(model_dir_, file.AsString()) + ", which does not hold it" +
                     (held ? " (" + JoinPath(model_dir_, held->file) + " does)" : std::string()));
    }
  }
}

void SafetensorsArchive::OpenFile(const std::string& file_name) {
  auto file = std::make_unique<MappedFile>();
  file->name = file_name;
  file->path = JoinPath(model_dir_, file_name);
  const std::string& path = file->path;

  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) Fail(path, std::string("cannot open: ") + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    Fail(path, std::string("cannot stat: ") + std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    Fail(path, "not a regular file");
  }
  uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8) {
    ::close(fd);
    Fail(path, "file is " + std::to_string(file_size) + " bytes, too short for the 8-byte header length");
  }
  void* base = ::mmap(nullptr, static_cast<size_t>(file_size), PROT_READ, MAP_PRIVATE, fd, 0);
  int map_errno = errno;
  ::close(fd);  // the mapping stays valid without the descriptor
  if (base == MAP_FAILED) Fail(path, std::string("cannot mmap: ") + std::strerror(map_errno));
  file->base = base;
  file->size = static_cast<size_t>(file_size);

  const auto* bytes = static_cast<const unsigned char*>(base);
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | bytes[i];
  if (header_size > file_size - 8) {
    Fail(path, "header length " + std::to_string(header_size) + " exceeds the file (" + std::to_string(file_size) +
                   " bytes); the file is truncated or not safetensors");
  }
  if (header_size > kMaxHeaderBytes) {
    Fail(path, "header length " + std::to_string(header_size) + " is over the " + std::to_string(kMaxHeaderBytes) +
                   "-byte limit");
  }
  const unsigned char* data = bytes + 8 + header_size;
  uint64_t data_size = file_size - 8 - header_size;

  JsonValue header;
  try {
    header = ParseJson(std::string_view(reinterpret_cast<const char*>(bytes + 8), static_cast<size_t>(header_size)));
  } catch (const JsonError& e) {
    Fail(path, std::string("header is not valid JSON: ") + e.what() + " of the header");
  }
  if (!header.IsObject()) Fail(path, std::string("header is ") + header.KindName() + ", not a JSON object");

  std::vector<TensorInfo> tensors;
  // (begin, end, index into tensors) of non-empty tensors, for the overlap check.
  std::vector<std::pair<std::pair<uint64_t, uint64_t>, size_t>> ranges;
  for (const auto& [name, entry] : header.AsObject()) {
    if (name == "__metadata__") {
      if (!entry.IsObject()) Fail(path, std::string("__metadata__ is ") + entry.KindName() + ", not an object of strings");
      for (const auto& [key, value] : entry.AsObject()) {
        if (!value.IsString()) {
          Fail(path, "__metadata__ \"" + key + "\" is " + value.KindName() + ", not a string");
        }
        file->metadata.emplace(key, value.AsString());
      }
      continue;
    }
    if (!entry.IsObject()) FailTensor(path, name, std::string("entry is ") + entry.KindName() + ", not an object");

    TensorInfo info;
    info.name = name;
    info.file = file_name;

    const JsonValue* dtype = entry.Find("dtype");
    if (dtype == nullptr) FailTensor(path, name, "no \"dtype\"");
    if (!dtype->IsString()) FailTensor(path, name, std::string("\"dtype\" is ") + dtype->KindName() + ", not a string");
    std::optional<DType> parsed = ParseDType(dtype->AsString());
    if (!parsed) FailTensor(path, name, "unknown dtype \"" + dtype->AsString() + "\"");
    info.dtype = *parsed;

    const JsonValue* shape = entry.Find("shape");
    if (shape == nullptr) FailTensor(path, name, "no \"shape\"");
    if (!shape->IsArray()) FailTensor(path, name, std::string("\"shape\" is ") + shape->KindName() + ", not an array");
    uint64_t numel = 1;
    bool numel_overflow = false;
    for (const JsonValue& dim : shape->AsArray()) {
      std::optional<int64_t> d = dim.AsInt64();
      if (!d || *d < 0) FailTensor(path, name, "\"shape\" must hold non-negative integers");
      info.shape.push_back(*d);
      numel_overflow = numel_overflow || __builtin_mul_overflow(numel, static_cast<uint64_t>(*d), &numel);
    }

    const JsonValue* offsets = entry.Find("data_offsets");
    if (offsets == nullptr) FailTensor(path, name, "no \"data_offsets\"");
    if (!offsets->IsArray() || offsets->AsArray().size() != 2 || !offsets->AsArray()[0].AsUint64() ||
        !offsets->AsArray()[1].AsUint64()) {
      FailTensor(path, name, "\"data_offsets\" must be [begin, end] with non-negative integers");
    }
    uint64_t begin = *offsets->AsArray()[0].AsUint64();
    uint64_t end = *offsets->AsArray()[1].AsUint64();
    std::string range = "data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) + "]";
    if (begin > end) FailTensor(path, name, range + " end before they begin");
    if (end > data_size) {
      FailTensor(path, name, range + " exceed the data section (" + std::to_string(data_size) + " bytes)");
    }
    uint64_t nbytes = 0;
    if (numel_overflow || __builtin_mul_overflow(numel, static_cast<uint64_t>(DTypeSize(info.dtype)), &nbytes) ||
        nbytes != end - begin) {
      FailTensor(path, name, range + " hold " + std::to_string(end - begin) + " bytes but shape " +
                                 ShapeString(info.shape) + " of " + DTypeName(info.dtype) + " needs " +
                                 (numel_overflow ? std::string("more than 2^64") : std::to_string(numel) + " x " +
                                  std::to_string(DTypeSize(info.dtype))));
    }
    info.numel = numel;
    info.nbytes = nbytes;
    info.data = data + begin;
    if (nbytes > 0) ranges.push_back({{begin, end}, tensors.size()});
    tensors.push_back(std::move(info));
  }

  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].first.first < ranges[i - 1].first.second) {
      const TensorInfo& a = tensors[ranges[i - 1].second];
      const TensorInfo& b = tensors[ranges[i].second];
      FailTensor(path, b.name, "data_offsets [" + std::to_string(ranges[i].first.first) + ", " +
                                   std::to_string(ranges[i].first.second) + "] overlap tensor \"" + a.name + "\" [" +
                                   std::to_string(ranges[i - 1].first.first) + ", " +
                                   std::to_string(ranges[i - 1].first.second) + "]");
    }
  }

  for (auto& t : tensors) tensors_.push_back(std::move(t));
  files_.push_back(std::move(file));
}

const TensorInfo* SafetensorsArchive::Find(const std::string& name) const {
  auto it = std::lower_bound(tensors_.begin(), tensors_.end(), name,
                             [](const TensorInfo& t, const std::string& n) { return t.name < n; });
  if (it == tensors_.end() || it->name != name) return nullptr;
  return &*it;
}

const TensorInfo& SafetensorsArchive::Get(const std::string& name) const {
  const TensorInfo* info = Find(name);
  if (info == nullptr) throw std::runtime_error("model dir " + model_dir_ + ": tensor \"" + name + "\" not found");
  return *info;
}

std::vector<std::string> SafetensorsArchive::FileNames() const {
  std::vector<std::string> names;
  for (const auto& f : files_) names.push_back(f->name);
  std::sort(names.begin(), names.end());
  return names;
}

const std::map<std::string, std::string>& SafetensorsArchive::Metadata(const std::string& file) const {
  for (const auto& f : files_) {
    if (f->name == file) return f->metadata;
  }
  throw std::runtime_error("model dir " + model_dir_ + ": no open safetensors file \"" + file + "\"");
}

}  // namespace tg
