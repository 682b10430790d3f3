// A reader for Hugging Face safetensors checkpoints: one `model.safetensors`, or
// shards listed by `model.safetensors.index.json`. Files are memory-mapped and
// every header field is validated before any tensor is handed out; tensors are
// returned as views into the mapping (no copies, no LibTorch).
//
// A loader reads each tensor once, into its own memory in the serving dtype:
// Prefetch asks the kernel to start reading a tensor's bytes before they are
// touched, and Release drops them from this process's resident set once they
// are copied. Without Release the whole file stays resident beside the
// converted weights until the mapping goes (a 14.7 GB OPT-2.7b file beside
// 7.5 GB of bfloat16 weights); with it, loading holds at most one tensor's
// bytes of the file at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace blip2::engine {

enum class DType { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

size_t DTypeSize(DType dtype);
const char* DTypeName(DType dtype);  // the safetensors spelling: "F32", "BF16", ...
std::string ShapeString(const std::vector<int64_t>& shape);  // "[2, 257, 32]"

// A tensor inside a mapped file. Valid while its SafetensorsFile lives.
struct TensorView {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const std::byte* data = nullptr;
  size_t nbytes = 0;
  std::string file;  // the file it lives in, for error messages

  int64_t numel() const;
};

class SafetensorsFile {
 public:
  // Maps `path` and validates its header: length within the file, JSON, known
  // dtypes, non-negative shapes, byte sizes that match shapes, offsets that are
  // ordered, non-overlapping, contiguous and inside the file.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // madvise(WILLNEED) / madvise(DONTNEED) over the whole pages of `view`, which
  // must lie in this file. Advice only: a released page reads again from the
  // file if touched, so a view stays valid.
  void Prefetch(const TensorView& view) const;
  void Release(const TensorView& view) const;

 private:
  friend class Checkpoint;  // FileOf: which mapping holds a view
  SafetensorsFile() = default;
  absl::Status ParseHeader();

  std::string path_;
  void* mapping_ = nullptr;
  size_t size_ = 0;
  std::map<std::string, TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

// All tensors of a model folder, across shards. Thread-safe for reads.
class Checkpoint {
 public:
  // Opens `model.safetensors.index.json` and every shard it names, or else
  // `model.safetensors`. Fails naming the file when a shard is missing or a
  // tensor the index lists is not in its shard.
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& model_dir);

  bool Has(const std::string& name) const { return index_.count(name) > 0; }
  // NOT_FOUND naming the tensor and the folder when absent.
  absl::StatusOr<TensorView> Get(const std::string& name) const;
  std::vector<std::string> Names() const;
  const std::string& model_dir() const { return model_dir_; }
  // SafetensorsFile::Prefetch / Release for a view this checkpoint handed out.
  void Prefetch(const TensorView& view) const;
  void Release(const TensorView& view) const;

 private:
  const SafetensorsFile* FileOf(const TensorView& view) const;

  std::string model_dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorView*> index_;
};

// A tensor to serialise: raw little-endian bytes of `shape` in `dtype`.
struct TensorToWrite {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::string bytes;
};

// The safetensors encoding of `tensors` (header padded to 8 bytes, data in order).
std::string EncodeSafetensors(const std::vector<TensorToWrite>& tensors);
absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors);

}  // namespace blip2::engine
