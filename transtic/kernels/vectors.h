// The native float vector both kernels compute with, from GCC vector extensions: the
// same source becomes AVX-512, AVX2 or SSE code depending on the -m flags it is
// compiled with (build.py picks them from the CPU capability torch itself uses).
// build.py hashes this header into every kernel's library name, so editing it rebuilds
// them all.

#pragma once

#include <stdint.h>

// Internal linkage: each kernel library keeps its own copies, which another loaded
// kernel library (perhaps built for another instruction set) cannot interpose.
namespace {

// One native vector per operation: 16 floats with AVX-512, 8 with AVX2, 4 otherwise
// (wider GCC vectors than the target has are split into slow generic code).
#if defined(__AVX512F__)
constexpr int kLanes = 16;
#elif defined(__AVX__)
constexpr int kLanes = 8;
#else
constexpr int kLanes = 4;
#endif
constexpr int kVectorBytes = kLanes * 4;
typedef float vf __attribute__((vector_size(kVectorBytes)));
typedef int32_t vi __attribute__((vector_size(kVectorBytes)));
// unaligned access to a vector's worth of floats
typedef float vf_u __attribute__((vector_size(kVectorBytes), aligned(4)));

inline vf splat(float s) { return vf{} + s; }
inline vf load(const float* p) { return *reinterpret_cast<const vf_u*>(p); }
inline void store(float* p, vf v) { *reinterpret_cast<vf_u*>(p) = v; }

}  // namespace
