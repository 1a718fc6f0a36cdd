// Output allocation for large CPU results.
//
// A fresh 512 MiB tensor is backed by pages the kernel maps and zeroes on first touch: 131072 page faults of
// 4 KiB each, which cost more than the softmax itself (measured: 120 ms to allocate-and-fill vs 17 ms to fill a
// reused buffer). Asking for transparent huge pages (2 MiB) on the buffer before touching it turns those into
// 256 faults. It is advice only: where THP is disabled or unsupported, nothing changes.
#pragma once
#include <ATen/ATen.h>
#include <cstdint>
#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace tgb {

inline at::Tensor empty_like_hugepages(const at::Tensor& like) {
  auto y = at::empty_like(like, at::MemoryFormat::Contiguous);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  const size_t bytes = y.nbytes();
  if (bytes >= 4 * kHuge) {
    const uintptr_t p = reinterpret_cast<uintptr_t>(y.data_ptr());
    const uintptr_t start = (p + kHuge - 1) & ~(kHuge - 1), end = (p + bytes) & ~(kHuge - 1);
    if (end > start) madvise(reinterpret_cast<void*>(start), end - start, MADV_HUGEPAGE);
  }
#endif
  return y;
}

}  // namespace tgb
