#include "engine/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <set>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/file_util.h"
#include "common/status_macros.h"

namespace blip2::engine {
namespace {

// The format caps the header at 100 MB; anything larger is a corrupt length.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

bool ParseDType(const std::string& name, DType* out) {
  static const std::pair<const char*, DType> kNames[] = {
      {"F64", DType::kF64}, {"F32", DType::kF32}, {"F16", DType::kF16}, {"BF16", DType::kBF16},
      {"I64", DType::kI64}, {"I32", DType::kI32}, {"I16", DType::kI16}, {"I8", DType::kI8},
      {"U8", DType::kU8},   {"BOOL", DType::kBool}};
  for (const auto& [n, d] : kNames) {
    if (name == n) {
      *out = d;
      return true;
    }
  }
  return false;
}

bool IsNonNegativeInt(const nlohmann::json& v) {
  return v.is_number_unsigned() || (v.is_number_integer() && v.get<int64_t>() >= 0);
}

}  // namespace

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF64: case DType::kI64: return 8;
    case DType::kF32: case DType::kI32: return 4;
    case DType::kF16: case DType::kBF16: case DType::kI16: return 2;
    case DType::kI8: case DType::kU8: case DType::kBool: return 1;
  }
  return 0;
}

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF64: return "F64";
    case DType::kF32: return "F32";
    case DType::kF16: return "F16";
    case DType::kBF16: return "BF16";
    case DType::kI64: return "I64";
    case DType::kI32: return "I32";
    case DType::kI16: return "I16";
    case DType::kI8: return "I8";
    case DType::kU8: return "U8";
    case DType::kBool: return "BOOL";
  }
  return "?";
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return absl::NotFoundError(absl::StrCat(path, ": file not found"));
    return absl::FailedPreconditionError(absl::StrCat(path, ": cannot open: ", std::strerror(err)));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return absl::FailedPreconditionError(absl::StrCat(path, ": cannot stat"));
  }
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->size_ = static_cast<size_t>(st.st_size);
  if (file->size_ > 0) {
    void* m = ::mmap(nullptr, file->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
      ::close(fd);
      return absl::FailedPreconditionError(absl::StrCat(path, ": mmap failed: ", std::strerror(errno)));
    }
    file->mapping_ = m;
  }
  ::close(fd);  // the mapping keeps the file alive
  RETURN_IF_ERROR(file->ParseHeader());
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_ != nullptr) ::munmap(mapping_, size_);
}

absl::Status SafetensorsFile::ParseHeader() {
  auto fail = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": invalid safetensors file: ", what));
  };
  if (size_ < 8) return fail(absl::StrCat("file is ", size_, " bytes, too small for the 8-byte header length"));
  const auto* bytes = static_cast<const std::byte*>(mapping_);
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes, 8);  // little-endian on every platform we build for
  if (header_len > size_ - 8) {
    return fail(absl::StrCat("header length ", header_len, " runs past the end of the file (", size_, " bytes)"));
  }
  if (header_len > kMaxHeaderBytes) return fail(absl::StrCat("header length ", header_len, " exceeds 100 MB"));
  const char* header_begin = reinterpret_cast<const char*>(bytes + 8);
  nlohmann::json header = nlohmann::json::parse(header_begin, header_begin + header_len, nullptr, false);
  if (header.is_discarded()) return fail("header is not valid JSON");
  if (!header.is_object()) return fail("header is not a JSON object");

  const std::byte* buffer = bytes + 8 + header_len;
  const uint64_t buffer_size = size_ - 8 - header_len;
  struct Span {
    uint64_t begin, end;
    std::string name;
  };
  std::vector<Span> spans;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) return fail("__metadata__ is not an object");
      for (const auto& [k, v] : entry.items()) {
        if (!v.is_string()) return fail(absl::StrCat("__metadata__.", k, " is not a string"));
        metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    const std::string tensor = name;  // a structured binding cannot be captured before C++20 (clang 14)
    auto tensor_fail = [&](const std::string& what) { return fail(absl::StrCat("tensor \"", tensor, "\": ", what)); };
    if (!entry.is_object()) return tensor_fail("entry is not an object");
    if (!entry.contains("dtype") || !entry["dtype"].is_string()) return tensor_fail("missing dtype");
    TensorView view;
    view.file = path_;
    const std::string dtype_name = entry["dtype"].get<std::string>();
    if (!ParseDType(dtype_name, &view.dtype)) return tensor_fail(absl::StrCat("unknown dtype \"", dtype_name, "\""));
    if (!entry.contains("shape") || !entry["shape"].is_array()) return tensor_fail("missing shape");
    uint64_t numel = 1;
    for (const auto& d : entry["shape"]) {
      if (!IsNonNegativeInt(d)) return tensor_fail(absl::StrCat("shape ", entry["shape"].dump(), " is not a list of non-negative integers"));
      const uint64_t dim = d.get<uint64_t>();
      if (dim != 0 && numel > (uint64_t{1} << 62) / dim) return tensor_fail("shape is too large");
      numel *= dim;
      view.shape.push_back(static_cast<int64_t>(dim));
    }
    const auto& offsets = entry.contains("data_offsets") ? entry["data_offsets"] : nlohmann::json();
    if (!offsets.is_array() || offsets.size() != 2 || !IsNonNegativeInt(offsets[0]) || !IsNonNegativeInt(offsets[1])) {
      return tensor_fail("data_offsets must be two non-negative integers");
    }
    const uint64_t begin = offsets[0].get<uint64_t>();
    const uint64_t end = offsets[1].get<uint64_t>();
    if (end < begin) return tensor_fail(absl::StrCat("data_offsets [", begin, ", ", end, "] end before they begin"));
    if (end > buffer_size) {
      return tensor_fail(absl::StrCat("data_offsets [", begin, ", ", end, "] run past the end of the data (",
                                      buffer_size, " bytes)"));
    }
    const uint64_t expected = numel * DTypeSize(view.dtype);
    if (end - begin != expected) {
      return tensor_fail(absl::StrCat("byte size ", end - begin, " disagrees with shape ", ShapeString(view.shape),
                                      " of ", dtype_name, " (", expected, " bytes)"));
    }
    view.data = buffer + begin;
    view.nbytes = expected;
    spans.push_back({begin, end, name});
    tensors_.emplace(name, std::move(view));
  }
  // Tensors must tile the data area exactly: no overlaps, no holes.
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t cursor = 0;
  for (size_t i = 0; i < spans.size(); ++i) {
    if (spans[i].begin < cursor) {
      return fail(absl::StrCat("tensors \"", spans[i - 1].name, "\" and \"", spans[i].name, "\" overlap"));
    }
    if (spans[i].begin > cursor) {
      return fail(absl::StrCat("unused bytes [", cursor, ", ", spans[i].begin, ") before tensor \"", spans[i].name, "\""));
    }
    cursor = spans[i].end;
  }
  if (cursor != buffer_size) {
    return fail(absl::StrCat("data area is ", buffer_size, " bytes but the tensors cover ", cursor));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& model_dir) {
  auto ckpt = std::make_unique<Checkpoint>();
  ckpt->model_dir_ = model_dir;
  const std::string index_path = common::JoinPath(model_dir, "model.safetensors.index.json");
  const std::string single_path = common::JoinPath(model_dir, "model.safetensors");
  if (common::FileExists(index_path)) {
    ASSIGN_OR_RETURN(std::string text, common::ReadFile(index_path));
    nlohmann::json index = nlohmann::json::parse(text, nullptr, false);
    if (index.is_discarded() || !index.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": not a JSON object"));
    }
    if (!index.contains("weight_map") || !index["weight_map"].is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": weight_map is missing or not an object"));
    }
    std::map<std::string, SafetensorsFile*> shards;
    for (const auto& [name, shard] : index["weight_map"].items()) {
      if (!shard.is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(index_path, ": weight_map.", name, " is not a file name"));
      }
      const std::string shard_name = shard.get<std::string>();
      if (shard_name.find('/') != std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat(index_path, ": shard \"", shard_name, "\" is not a plain file name"));
      }
      auto it = shards.find(shard_name);
      if (it == shards.end()) {
        auto file = SafetensorsFile::Open(common::JoinPath(model_dir, shard_name));
        if (!file.ok()) {
          if (absl::IsNotFound(file.status())) {
            return absl::NotFoundError(absl::StrCat(index_path, ": shard \"", shard_name, "\" (holding \"", name,
                                                    "\") does not exist"));
          }
          return file.status();
        }
        ckpt->files_.push_back(std::move(*file));
        it = shards.emplace(shard_name, ckpt->files_.back().get()).first;
      }
      auto t = it->second->tensors().find(name);
      if (t == it->second->tensors().end()) {
        return absl::NotFoundError(absl::StrCat(index_path, ": tensor \"", name, "\" is not in shard \"", shard_name, "\""));
      }
      ckpt->index_[name] = &t->second;
    }
  } else if (common::FileExists(single_path)) {
    ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(single_path));
    for (const auto& [name, view] : file->tensors()) ckpt->index_[name] = &view;
    ckpt->files_.push_back(std::move(file));
  } else {
    return absl::NotFoundError(
        absl::StrCat(model_dir, ": no model.safetensors or model.safetensors.index.json"));
  }
  return ckpt;
}

absl::StatusOr<TensorView> Checkpoint::Get(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) {
    return absl::NotFoundError(absl::StrCat(model_dir_, ": checkpoint has no tensor \"", name, "\""));
  }
  return *it->second;
}

std::vector<std::string> Checkpoint::Names() const {
  std::vector<std::string> names;
  for (const auto& [name, view] : index_) names.push_back(name);
  return names;
}

namespace {

// Applies `advice` to the pages that lie wholly inside [data, data + nbytes)
// of a mapping at [base, base + size): a page shared with a neighbouring
// tensor is left alone (it is released with that neighbour, or stays).
void AdvisePages(const void* base, size_t size, const std::byte* data, size_t nbytes, int advice, bool inner_only) {
  if (base == nullptr || nbytes == 0) return;
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto begin = reinterpret_cast<uintptr_t>(data);
  const auto end = begin + nbytes;
  const auto lo = inner_only ? (begin + page - 1) / page * page : begin / page * page;
  const auto hi = inner_only ? end / page * page : std::min((end + page - 1) / page * page,
                                                            reinterpret_cast<uintptr_t>(base) + size);
  if (hi > lo) ::madvise(reinterpret_cast<void*>(lo), hi - lo, advice);
}

}  // namespace

void SafetensorsFile::Prefetch(const TensorView& view) const {
  AdvisePages(mapping_, size_, view.data, view.nbytes, MADV_WILLNEED, /*inner_only=*/false);
}

void SafetensorsFile::Release(const TensorView& view) const {
  AdvisePages(mapping_, size_, view.data, view.nbytes, MADV_DONTNEED, /*inner_only=*/true);
}

const SafetensorsFile* Checkpoint::FileOf(const TensorView& view) const {
  for (const auto& file : files_) {
    const auto* base = static_cast<const std::byte*>(file->mapping_);
    if (view.data >= base && view.data + view.nbytes <= base + file->size_) return file.get();
  }
  return nullptr;
}

void Checkpoint::Prefetch(const TensorView& view) const {
  if (const SafetensorsFile* file = FileOf(view)) file->Prefetch(view);
}

void Checkpoint::Release(const TensorView& view) const {
  if (const SafetensorsFile* file = FileOf(view)) file->Release(view);
}

std::string EncodeSafetensors(const std::vector<TensorToWrite>& tensors) {
  nlohmann::json header = nlohmann::json::object();
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    header[t.name] = {{"dtype", DTypeName(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keeps the data 8-byte aligned
  const uint64_t len = text.size();
  std::string out(reinterpret_cast<const char*>(&len), 8);
  out += text;
  for (const auto& t : tensors) out += t.bytes;
  return out;
}

absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return absl::FailedPreconditionError(absl::StrCat(path, ": cannot create: ", std::strerror(errno)));
  const std::string bytes = EncodeSafetensors(tensors);
  const bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  if (std::fclose(f) != 0 || !ok) return absl::DataLossError(absl::StrCat(path, ": write failed"));
  return absl::OkStatus();
}

}  // namespace blip2::engine
