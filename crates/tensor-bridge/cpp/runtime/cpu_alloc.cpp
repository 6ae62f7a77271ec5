// kiln's CPU allocator for libtorch (see src/memory.rs for what it promises).
//
// Why: a training step frees and re-allocates the same large buffers every
// step (gradients, activations, optimizer temporaries). Through c10's
// default allocator (posix_memalign) each one is fresh memory from glibc,
// often a fresh mmap that is page-faulted again, on 4 KiB pages. On a VM the
// TLB misses of 4 KiB pages are expensive (a nested page walk): streaming an
// optimizer step over 4 KiB pages ran ~20 % slower than over 2 MiB pages on
// the machine this was written on. So blocks of at least kMinBytes come
// from arenas the kernel may back with transparent huge pages
// (MADV_HUGEPAGE), and a freed block is kept for the next request of its
// size class; smaller requests go to c10's allocator as before. Nothing here
// touches a value: where bytes live never changes what a kernel computes.
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <functional>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace kiln {
namespace {

constexpr size_t kMinBytes = size_t(256) << 10;   // smaller: c10's allocator
constexpr size_t kHugePage = size_t(2) << 20;     // x86-64 / arm64 THP size
constexpr size_t kArenaBytes = size_t(64) << 20;  // reserved per arena
constexpr size_t kHeader = 64;                    // c10's alignment (gAlignment)
// Freed blocks beyond this many cached bytes give their pages back to the
// kernel (MADV_DONTNEED) and keep only their addresses.
constexpr size_t kMaxResidentCache = size_t(512) << 20;

// A block is [header | data]; the header records the block's class size and
// whether its pages are still resident.
struct Header {
  size_t size;
  bool resident;
};
static_assert(sizeof(Header) <= kHeader, "the header fits before 64-byte aligned data");

// Request size -> class size: a multiple of max(4 KiB, 1/8 of the request's
// power of two), so a class wastes at most 12.5 % and nearby sizes share one.
size_t size_class(size_t n) {
  size_t top = size_t(1) << (63 - __builtin_clzll(static_cast<unsigned long long>(n)));
  size_t step = std::max<size_t>(4096, top >> 3);
  return (n + step - 1) / step * step;
}

size_t physical_memory() {
  long pages = sysconf(_SC_PHYS_PAGES);
  long page = sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page <= 0) return size_t(1) << 34;
  return static_cast<size_t>(pages) * static_cast<size_t>(page);
}

class ArenaAllocator final : public c10::Allocator {
 public:
  explicit ArenaAllocator(c10::Allocator *fallback)
      : fallback_(fallback), reserve_limit_(physical_memory()) {}

  c10::DataPtr allocate(size_t n) override {
    if (n < kMinBytes) return fallback_->allocate(n);
    char *block = take(size_class(n + kHeader));
    // Out of address space we allow ourselves (or mmap refused): c10's way.
    if (block == nullptr) return fallback_->allocate(n);
    void *data = block + kHeader;
    return {data, data, &release, c10::Device(c10::DeviceType::CPU)};
  }

  // Frees what either allocator handed out (raw_allocate's contract).
  c10::DeleterFnPtr raw_deleter() const override { return &release; }

  void copy_data(void *dest, const void *src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  void stats(uint64_t *out) {
    std::lock_guard<std::mutex> lock(mu_);
    out[0] = reserved_;
    out[1] = live_;
    out[2] = cached_;
    out[3] = resident_cached_;
  }

  static ArenaAllocator *instance;

 private:
  static void release(void *data) { instance->free_block(data); }

  // The first arena starting after `p` (arenas are kept sorted by address).
  std::vector<std::pair<char *, size_t>>::const_iterator first_after(const char *p) const {
    return std::upper_bound(arenas_.begin(), arenas_.end(), p,
                            [](const char *q, const std::pair<char *, size_t> &a) {
                              return std::less<const char *>()(q, a.first);
                            });
  }

  // Whether `p` lies in one of the arenas.
  bool owns(const char *p) const {
    auto after = first_after(p);
    if (after == arenas_.begin()) return false;
    const auto &a = *(after - 1);
    return std::less<const char *>()(p, a.first + a.second);
  }

  char *take(size_t size) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = free_.find(size);
    if (it != free_.end() && !it->second.empty()) {
      char *block = it->second.back();
      it->second.pop_back();
      auto *h = reinterpret_cast<Header *>(block);
      cached_ -= size;
      if (h->resident) resident_cached_ -= size;
      h->resident = true;
      live_ += size;
      return block;
    }
    if (left_ < size && !new_arena(size)) return nullptr;
    char *block = next_;
    next_ += size;
    left_ -= size;
    auto *h = reinterpret_cast<Header *>(block);
    h->size = size;
    h->resident = true;
    live_ += size;
    return block;
  }

  // Reserves a 2 MiB-aligned arena (address space only until touched) and
  // asks for huge pages; where THP is off the madvise fails and 4 KiB pages
  // serve. What the previous arena had left is not used again.
  bool new_arena(size_t size) {
    size_t bytes = std::max(kArenaBytes, (size + kHugePage - 1) / kHugePage * kHugePage);
    if (reserved_ + bytes > reserve_limit_) return false;
    size_t span = bytes + kHugePage;
    void *raw = mmap(nullptr, span, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (raw == MAP_FAILED) return false;
    auto start = reinterpret_cast<uintptr_t>(raw);
    uintptr_t aligned = (start + kHugePage - 1) & ~(uintptr_t(kHugePage) - 1);
    if (aligned > start) munmap(raw, aligned - start);
    uintptr_t end = start + span;
    if (end > aligned + bytes) munmap(reinterpret_cast<void *>(aligned + bytes), end - aligned - bytes);
    char *base = reinterpret_cast<char *>(aligned);
#ifdef MADV_HUGEPAGE
    (void)madvise(base, bytes, MADV_HUGEPAGE);
#endif
    try {
      arenas_.emplace(first_after(base), base, bytes);
    } catch (...) {
      munmap(base, bytes);  // c10's allocator serves instead
      return false;
    }
    reserved_ += bytes;
    next_ = base;
    left_ = bytes;
    return true;
  }

  void free_block(void *data) {
    if (data == nullptr) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (owns(static_cast<char *>(data))) {
        char *block = static_cast<char *>(data) - kHeader;
        auto *h = reinterpret_cast<Header *>(block);
        live_ -= h->size;
        cached_ += h->size;
        if (resident_cached_ + h->size > kMaxResidentCache) {
          // Keep the header's page: it is touched again on reuse anyway.
          size_t page = 4096;
          if (h->size > page) (void)madvise(block + page, h->size - page, MADV_DONTNEED);
          h->resident = false;
        } else {
          resident_cached_ += h->size;
        }
        try {
          free_[h->size].push_back(block);
        } catch (...) {
          // No memory to remember it (a deleter must not throw): the block
          // stays out of the cache, its address space unused.
          cached_ -= h->size;
          if (h->resident) resident_cached_ -= h->size;
        }
        return;
      }
    }
    fallback_->raw_deleter()(data);
  }

  c10::Allocator *fallback_;
  size_t reserve_limit_;
  std::mutex mu_;
  std::vector<std::pair<char *, size_t>> arenas_;
  std::unordered_map<size_t, std::vector<char *>> free_;
  char *next_ = nullptr;
  size_t left_ = 0;
  size_t reserved_ = 0, live_ = 0, cached_ = 0, resident_cached_ = 0;
};

ArenaAllocator *ArenaAllocator::instance = nullptr;
std::once_flag installed;

}  // namespace
}  // namespace kiln

extern "C" {

// Makes kiln's arena allocator libtorch's CPU allocator (priority 1, above
// c10's default). Returns 1 if this call installed it, 0 if it already was.
int kiln_install_cpu_allocator() {
  int installed_now = 0;
  std::call_once(kiln::installed, [&] {
    // Never destroyed: tensors may outlive every static destructor.
    kiln::ArenaAllocator::instance = new kiln::ArenaAllocator(c10::GetDefaultCPUAllocator());
    c10::SetCPUAllocator(kiln::ArenaAllocator::instance, /*priority=*/1);
    installed_now = 1;
  });
  return installed_now;
}

// [reserved, live, cached, resident cached] bytes of the arenas; all zero
// before kiln_install_cpu_allocator. Returns 0 when not installed.
int kiln_cpu_allocator_stats(uint64_t *out) {
  if (kiln::ArenaAllocator::instance == nullptr) {
    std::memset(out, 0, 4 * sizeof(uint64_t));
    return 0;
  }
  kiln::ArenaAllocator::instance->stats(out);
  return 1;
}

}  // extern "C"
