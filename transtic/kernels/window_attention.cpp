// Window multi-head self-attention of the Swin blocks on the CPU: float32 arithmetic on
// float32 or bfloat16 token rows.
//
// Why a kernel of our own: a Swin window is 64 queries against 64-80 keys with 12-16
// channels per head, thousands of such tiny problems per block. PyTorch's SDPA kernels
// are tiled for long sequences and reach ~40-55 GFLOP/s on them; here one window x head
// lives in registers and L1, with the position bias, the shifted-window mask, the
// prompt keys and the output layout of the projection folded in, so no tensor is
// gathered, concatenated or transposed around the call.
//
// Vectors of the native width (vectors.h). Every window is computed by one thread
// with one fixed order of operations, so results do not depend on the thread count.

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "vectors.h"

namespace {

// Bias and mask rows hold the window's queries rounded up to this (the Python side's
// padded_queries), whatever the vector width.
constexpr int kQueryPad = 16;

// exp(x) for x <= 0: 2^k * e^r with |r| <= ln2/2 and a degree-7 Taylor polynomial
// (truncation error < 1e-8 relative, below float32 rounding). Inputs below -87 are
// clamped, where e^x is below float32's normal range and weighs nothing in a softmax.
inline vf exp_nonpositive(vf x) {
  const vf lowest = splat(-87.0f);
  x = x < lowest ? lowest : x;
  const vf magic = splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  vf k = (x * 1.44269504088896341f + magic) - magic;
  vf r = x - k * 0.693359375f;  // ln 2 split in two so that k * ln2 stays exact
  r = r + k * 2.12194440e-4f;
  vf p = splat(1.0f / 5040.0f);
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  vi bits = (__builtin_convertvector(k, vi) + 127) << 23;
  return p * (vf)bits;  // same-size vector casts reinterpret the bits
}

struct Problem {
  const void* x;         // window tokens: row (w*T + t), q at 0, k at C, v at 2C
  int64_t x_stride;
  const void* prompts;   // prompt rows: k at 0, v at C; block w / prompt_div has P rows
  int64_t prompt_stride;
  int64_t prompt_div;
  const float* bias;     // (H, S, T_pad): key-major, queries along the vector lanes
  const float* masks;    // (slots, S, T_pad) additive, or null
  const int32_t* mask_slot;  // (windows_per_image): slot or -1
  int64_t windows_per_image;
  void* out;             // row (w*T + t), head h at h*D (x, prompts, out: one element type)
  int64_t out_stride;
  int64_t T, P, H, D;
  float scale;
};

// One window x head, one vector of queries at a time along the lanes: logits are held
// key-major (one vector per key), so the softmax over keys is elementwise across
// vectors and needs no horizontal reduction. The head's keys and values are copied into
// L1-sized scratch (widened to float32) and read as broadcast scalars and whole rows, so
// only the queries are transposed.
struct Scratch {
  float* queries_t;  // (D, lanes): the block's queries, transposed and scaled
  float* logits;     // (S, lanes): logits, then softmax numerators
  float* keys;       // (S, D): the head's key rows, prompts first
  float* values;     // (S, d_pad): value rows, zero-padded to whole vectors
  int64_t d_pad;
};

// The head width is a template parameter for the widths models use (FIXED_D > 0), so
// that every copy and address offset below is a constant; FIXED_D = 0 reads it at run
// time (same results, slower).
template <int FIXED_D>
inline int64_t head_width(const Problem& pb) {
  return FIXED_D > 0 ? FIXED_D : pb.D;
}

// Token rows are float32 or bfloat16; all arithmetic is float32.
struct Bf16 {
  uint16_t bits;
};

inline float to_float(float v) { return v; }
inline float to_float(Bf16 v) {
  const uint32_t bits = static_cast<uint32_t>(v.bits) << 16;
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}

inline void from_float(float& dst, float v) { dst = v; }
inline void from_float(Bf16& dst, float v) {  // round to nearest even, as PyTorch does
  uint32_t bits;
  memcpy(&bits, &v, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) {
    dst.bits = 0x7fc0;  // NaN stays NaN
    return;
  }
  dst.bits = static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

template <typename Elem>
inline void copy_in(float* dst, const Elem* src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = to_float(src[i]);
}

template <typename Elem>
inline void copy_out(Elem* dst, const float* src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) from_float(dst[i], src[i]);
}

// Weighted values of a block's queries for the head channels [d0, d0 + 16 * DB):
// out[i] = sum_j p[j][i] * v[j] / total[i], channels along the lanes, so every output
// row is written whole. G queries at a time keep G * DB accumulators in registers.
template <typename Elem, int FIXED_D, int DB>
void weighted_values(const Problem& pb, const Scratch& s, int64_t d0, const float* inverse,
                     Elem* const* out_rows, int valid_lanes) {
  constexpr int G = kLanes / DB;
  const int64_t S = pb.P + pb.T, D = head_width<FIXED_D>(pb);
  const int64_t width = D - d0 < DB * kLanes ? D - d0 : DB * kLanes;
  for (int i0 = 0; i0 < valid_lanes; i0 += G) {
    vf acc[G][DB];
    for (int g = 0; g < G; ++g)
      for (int b = 0; b < DB; ++b) acc[g][b] = vf{};
    for (int64_t j = 0; j < S; ++j) {
      const float* p = s.logits + j * kLanes + i0;
      vf v[DB];
      for (int b = 0; b < DB; ++b) v[b] = load(s.values + j * s.d_pad + d0 + b * kLanes);
      for (int g = 0; g < G; ++g)
        for (int b = 0; b < DB; ++b) acc[g][b] += p[g] * v[b];
    }
    for (int g = 0; g < G && i0 + g < valid_lanes; ++g) {
      float row[DB * kLanes];
      for (int b = 0; b < DB; ++b) store(row + b * kLanes, acc[g][b] * inverse[i0 + g]);
      copy_out(out_rows[i0 + g] + d0, row, width);
    }
  }
}

constexpr int kKeyGroup = 8;

template <typename Elem, int FIXED_D>
void attend_query_block(const Problem& pb, const Scratch& s, const float* bias,
                        const float* mask, int64_t t_pad, Elem* const* out_rows,
                        int valid_lanes) {
  const int64_t S = pb.P + pb.T, D = head_width<FIXED_D>(pb);
  vf peak = splat(-__builtin_inff());
  int64_t j = 0;
  for (; j + kKeyGroup <= S; j += kKeyGroup) {
    const float* keys = s.keys + j * D;
    vf acc[kKeyGroup];
    for (int k = 0; k < kKeyGroup; ++k) acc[k] = vf{};
    for (int64_t d = 0; d < D; ++d) {
      const vf q = load(s.queries_t + d * kLanes);
      for (int k = 0; k < kKeyGroup; ++k) acc[k] += keys[k * D + d] * q;
    }
    for (int k = 0; k < kKeyGroup; ++k) {
      vf logit = acc[k] + load(bias + (j + k) * t_pad);
      if (mask) logit += load(mask + (j + k) * t_pad);
      store(s.logits + (j + k) * kLanes, logit);
      peak = logit > peak ? logit : peak;
    }
  }
  for (; j < S; ++j) {
    vf acc = vf{};
    for (int64_t d = 0; d < D; ++d) acc += s.keys[j * D + d] * load(s.queries_t + d * kLanes);
    vf logit = acc + load(bias + j * t_pad);
    if (mask) logit += load(mask + j * t_pad);
    store(s.logits + j * kLanes, logit);
    peak = logit > peak ? logit : peak;
  }
  vf total = vf{};
  for (j = 0; j < S; ++j) {
    const vf e = exp_nonpositive(load(s.logits + j * kLanes) - peak);
    store(s.logits + j * kLanes, e);
    total += e;
  }
  float inverse[kLanes];
  store(inverse, 1.0f / total);
  for (int64_t d0 = 0; d0 < D; d0 += 4 * kLanes) {
    const int64_t blocks = (D - d0 + kLanes - 1) / kLanes;
    if (blocks == 1)
      weighted_values<Elem, FIXED_D, 1>(pb, s, d0, inverse, out_rows, valid_lanes);
    else if (blocks == 2)
      weighted_values<Elem, FIXED_D, 2>(pb, s, d0, inverse, out_rows, valid_lanes);
    else
      weighted_values<Elem, FIXED_D, 4>(pb, s, d0, inverse, out_rows, valid_lanes);
  }
}

// Asks for the rows of window w (and its prompt rows) ahead of use: window rows are
// 3C floats apart, a stride the hardware prefetchers follow poorly.
template <typename Elem>
inline void prefetch_rows(const Elem* first, int64_t rows, int64_t stride, int64_t elems) {
  constexpr int64_t per_line = 64 / sizeof(Elem);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t f = 0; f < elems; f += per_line) __builtin_prefetch(first + r * stride + f);
}

template <typename Elem, int FIXED_D>
void run_windows(const Problem& pb, int64_t w_begin, int64_t w_end, const Scratch& s) {
  const int64_t T = pb.T, P = pb.P, D = head_width<FIXED_D>(pb), C = pb.H * D, S = P + T;
  const int64_t t_pad = (T + kQueryPad - 1) / kQueryPad * kQueryPad;
  for (int64_t w = w_begin; w < w_end; ++w) {
    const Elem* window = static_cast<const Elem*>(pb.x) + w * T * pb.x_stride;
    const Elem* prompt =
        P ? static_cast<const Elem*>(pb.prompts) + (w / pb.prompt_div) * P * pb.prompt_stride
          : nullptr;
    const float* mask = nullptr;
    if (pb.masks) {
      const int32_t slot = pb.mask_slot[w % pb.windows_per_image];
      if (slot >= 0) mask = pb.masks + static_cast<int64_t>(slot) * S * t_pad;
    }
    for (int64_t h = 0; h < pb.H; ++h) {
      if (w + 1 < w_end) {  // the next window's rows, spread over this window's heads
        const int64_t r0 = T * h / pb.H, r1 = T * (h + 1) / pb.H;
        prefetch_rows(window + (T + r0) * pb.x_stride, r1 - r0, pb.x_stride, 3 * C);
      }
      for (int64_t j = 0; j < S; ++j) {
        const Elem* key = (j < P ? prompt + j * pb.prompt_stride
                                 : window + (j - P) * pb.x_stride + C) + h * D;
        copy_in(s.keys + j * D, key, D);
        copy_in(s.values + j * s.d_pad, key + C, D);
      }
      for (int64_t t0 = 0; t0 < T; t0 += kLanes) {
        const int valid = static_cast<int>(T - t0 < kLanes ? T - t0 : kLanes);
        Elem* out_rows[kLanes];
        for (int lane = 0; lane < valid; ++lane) {
          const Elem* q = window + (t0 + lane) * pb.x_stride + h * D;
          for (int64_t d = 0; d < D; ++d)
            s.queries_t[d * kLanes + lane] = to_float(q[d]) * pb.scale;
          out_rows[lane] = static_cast<Elem*>(pb.out) + (w * T + t0 + lane) * pb.out_stride + h * D;
        }
        for (int lane = valid; lane < kLanes; ++lane)
          for (int64_t d = 0; d < D; ++d) s.queries_t[d * kLanes + lane] = 0.0f;
        attend_query_block<Elem, FIXED_D>(pb, s, pb.bias + h * S * t_pad + t0,
                                    mask ? mask + t0 : nullptr, t_pad, out_rows, valid);
      }
    }
  }
}

typedef void (*Runner)(const Problem&, int64_t, int64_t, const Scratch&);

template <typename Elem>
Runner runner_for(int64_t head_dim) {
  switch (head_dim) {
    case 8: return run_windows<Elem, 8>;
    case 12: return run_windows<Elem, 12>;
    case 16: return run_windows<Elem, 16>;
    case 24: return run_windows<Elem, 24>;
    case 32: return run_windows<Elem, 32>;
    default: return run_windows<Elem, 0>;
  }
}

// Windows [w_begin, w_end) with scratch of this thread's own: 0, or -2 without memory.
int attend_range(const Problem& pb, Runner run, int64_t w_begin, int64_t w_end) {
  if (w_begin >= w_end) return 0;
  const int64_t S = pb.P + pb.T, D = pb.D;
  const int64_t d_pad = (D + kLanes - 1) / kLanes * kLanes;
  const size_t floats = static_cast<size_t>(D * kLanes + S * kLanes + S * D + S * d_pad);
  float* buffer = static_cast<float*>(aligned_alloc(64, (floats * sizeof(float) + 63) / 64 * 64));
  if (buffer == nullptr) return -2;
  memset(buffer, 0, floats * sizeof(float));  // the value rows' padding stays zero
  float* logits = buffer + D * kLanes;
  float* keys = logits + S * kLanes;
  const Scratch scratch{buffer, logits, keys, keys + S * D, d_pad};
  run(pb, w_begin, w_end, scratch);
  free(buffer);
  return 0;
}

}  // namespace

extern "C" {

// Largest key count (prompts + window tokens) and head width the kernel handles;
// callers fall back to PyTorch's attention beyond them.
int64_t transtic_attention_max_keys(void) { return 4096; }
int64_t transtic_attention_max_head_dim(void) { return 256; }

// 1 when built with OpenMP: then one call spreads its windows over `threads` threads of
// the OpenMP runtime PyTorch itself runs on. Threads of a separate pool would compete
// for the cores with that runtime's workers, which spin for a while after every GEMM.
int64_t transtic_attention_openmp(void) {
#ifdef _OPENMP
  return 1;
#else
  return 0;
#endif
}

// Attention for windows [w_begin, w_end); x, prompts and out hold float32, or bfloat16
// when `bfloat16` is nonzero (strides count elements). Returns 0, or -1 for unsupported sizes and
// -2 when scratch memory cannot be allocated. Each thread takes a contiguous range of
// windows (the whole range without OpenMP).
int transtic_window_attention(const void* x, int64_t x_stride, const void* prompts,
                              int64_t prompt_stride, int64_t prompt_div, const float* bias,
                              const float* masks, const int32_t* mask_slot,
                              int64_t windows_per_image, void* out, int64_t out_stride,
                              int64_t T, int64_t P, int64_t H, int64_t D, float scale,
                              int64_t bfloat16, int64_t w_begin, int64_t w_end,
                              int64_t threads) {
  if (T <= 0 || P < 0 || H <= 0 || D <= 0 || P + T > transtic_attention_max_keys() ||
      D > transtic_attention_max_head_dim() || w_end < w_begin)
    return -1;
  if (P > 0 && (prompts == nullptr || prompt_div <= 0)) return -1;
  if (masks != nullptr && (mask_slot == nullptr || windows_per_image <= 0)) return -1;
  const Problem pb{x, x_stride, prompts, prompt_stride, prompt_div, bias, masks, mask_slot,
                   windows_per_image, out, out_stride, T, P, H, D, scale};
  const Runner run = bfloat16 ? runner_for<Bf16>(D) : runner_for<float>(D);
  const int64_t windows = w_end - w_begin;
  if (threads > windows) threads = windows;
  int code = 0;
#ifdef _OPENMP
  if (threads > 1) {
#pragma omp parallel num_threads(static_cast<int>(threads)) reduction(min : code)
    {
      const int64_t n = omp_get_num_threads(), i = omp_get_thread_num();
      code = attend_range(pb, run, w_begin + windows * i / n, w_begin + windows * (i + 1) / n);
    }
    return code;
  }
#endif
  code = attend_range(pb, run, w_begin, w_end);
  return code;
}

}  // extern "C"
