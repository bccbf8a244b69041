// A model directory's safetensors files, memory-mapped read-only, with every
// header field validated before any tensor is handed out. The files are
// untrusted input: each problem becomes a std::runtime_error naming the file
// and tensor, never a crash or an out-of-bounds read.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace tg {

// "[4096, 128]": a shape as error messages print it.
std::string ShapeString(const std::vector<int64_t>& shape);

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::string file;                     // file name inside the model dir, e.g. "model.safetensors"
  const unsigned char* data = nullptr;  // first byte, inside the archive's read-only mapping
  uint64_t nbytes = 0;                  // == numel * DTypeSize(dtype)
  uint64_t numel = 0;                   // product of shape (1 for a scalar)
};

class SafetensorsArchive {
 public:
  // Opens `model_dir`/model.safetensors.index.json and every file its weight_map
  // names if present, else `model_dir`/model.safetensors. Throws std::runtime_error.
  explicit SafetensorsArchive(const std::string& model_dir);
  ~SafetensorsArchive();
  SafetensorsArchive(const SafetensorsArchive&) = delete;
  SafetensorsArchive& operator=(const SafetensorsArchive&) = delete;

  const std::string& model_dir() const { return model_dir_; }
  // Every tensor of every file, sorted by name.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  // nullptr when no file holds `name`.
  const TensorInfo* Find(const std::string& name) const;
  // Throws `model dir X: tensor "Y" not found` when no file holds `name`.
  const TensorInfo& Get(const std::string& name) const;

  // The opened file names, sorted.
  std::vector<std::string> FileNames() const;
  // A file's __metadata__ (empty when the header has none). Throws for an unknown file.
  const std::map<std::string, std::string>& Metadata(const std::string& file) const;

 private:
  struct MappedFile;

  void OpenFile(const std::string& file_name);
  void OpenIndex(const std::string& index_path);
  // Sorts tensors_ by name; throws if two files hold the same name.
  void SortTensors();

  std::string model_dir_;
  std::vector<std::unique_ptr<MappedFile>> files_;
  std::vector<TensorInfo> tensors_;
};

}  // namespace tg
