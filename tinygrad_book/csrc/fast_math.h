// Branch-free float math that GCC/Clang auto-vectorise (AVX2/AVX-512) inside `#pragma omp simd` loops.
// std::exp is a library call the vectoriser cannot inline, so a softmax row built on it runs one lane at a time.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

namespace tgb {

static inline float bits_to_float(int32_t i) { float f; std::memcpy(&f, &i, 4); return f; }
static inline int32_t float_to_bits(float f) { int32_t i; std::memcpy(&i, &f, 4); return i; }

// exp(x) in float, max error ~2 ulp (Cephes polynomial), correct limits:
//   exp(-inf) == 0 exactly, denormal results down to 2^-149, exp(NaN) == NaN, exp(x > 88.72) == inf.
static inline float exp_f32(float x) {
  const float log2e = 1.44269504088896341f, ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
  float xc = x < -104.0f ? -104.0f : (x > 88.8f ? 88.8f : x);
  // Round xc*log2(e) to the nearest integer n with the 1.5*2^23 trick: no float->int conversion (UB for NaN).
  float t = xc * log2e + 12582912.0f;
  int32_t n = float_to_bits(t) - 0x4B400000;
  float fn = t - 12582912.0f;
  float r = xc - fn * ln2_hi - fn * ln2_lo;  // |r| <= ln2/2
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  // 2^n in two halves so n in [-150, 128] never leaves the normal exponent range of either factor.
  int32_t n1 = n >> 1, n2 = n - n1;
  float y = p * bits_to_float((n1 + 127) << 23) * bits_to_float((n2 + 127) << 23);
  y = x < -104.0f ? 0.0f : y;
  return x > 88.72283935546875f ? INFINITY : y;
}

template <typename T> static inline T exp_fast(T x);
template <> inline float exp_fast<float>(float x) { return exp_f32(x); }
template <> inline double exp_fast<double>(double x) { return std::exp(x); }

}  // namespace tgb
