// 3x3 stride-1 convolutions (padding 1) of the prompt generator by Winograd's minimal
// filtering F(2x2, 3x3) or F(4x4, 3x3), float32, channels-last (NHWC) in and out, bias
// and an optional ReLU applied on the way out.
//
// Why: the instance prompt generator is a full-resolution U-Net whose 3x3 convs are a
// third of an encode, and oneDNN already runs them at this CPU's float32 FMA peak, so
// only fewer products can make them faster. F(MxM, 3x3) computes each MxM output tile
// from a TxT input tile (T = M + 2) with T*T products per (input, output) channel pair
// instead of 9*M*M: the input tiles are transformed (additions and small multiples),
// T*T independent matrix products over the channels follow, and the results are
// transformed back. F(2x2): 16 products for 4 outputs (2.25x fewer), transform entries
// 0 and +-1, rounding like an ordinary float32 conv; F(4x4): 36 for 16 (4x fewer),
// entries up to 8 in the output transform and 1/24 in the weights' (done once in Python,
// in float64), about ten times the rounding error (still ~1e-6 relative).
//
// Work is cut into blocks of tiles along one row of tiles; a block's transformed
// inputs and products stay in the core's L2 cache, and the weights of one output
// channel block stay in L1. Rows of tiles are spread over OpenMP threads (PyTorch's
// own runtime where the library is built with it). Every output is computed by one
// thread in one fixed order, so results do not depend on the thread count.
//
// Vectors of the native width (vectors.h), as in window_attention.cpp.

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "vectors.h"

namespace {

struct Conv {
  const float* x;     // (N, H, W, C1): the first C1 input channels
  const float* x2;    // (N, H, W, Cin - C1): the rest (the second of two concatenated)
  const float* u;     // (T*T, Cin, Cout): the transformed weights, position-major
  const float* bias;  // (Cout) or null
  float* out;         // (N, H, W, Cout)
  int64_t N, H, W, Cin, C1, Cout;
  int relu;
  int64_t tiles_h, tiles_w, block;  // tiles per block (a multiple of every row count below)
};

// The 1-D transforms of F(M, 3), each a fixed sequence of vector operations:
// input(d) = B^T d (T values), output(m) = A^T m (M values from T).
template <int M>
struct Tile;

template <>
struct Tile<2> {
  static constexpr int T = 4;
  static inline void input(const vf* d, vf* r) {
    r[0] = d[0] - d[2];
    r[1] = d[1] + d[2];
    r[2] = d[2] - d[1];
    r[3] = d[1] - d[3];
  }
  static inline void output(const vf* m, vf* o) {
    o[0] = m[0] + m[1] + m[2];
    o[1] = m[1] - m[2] - m[3];
  }
};

template <>
struct Tile<4> {
  static constexpr int T = 6;
  // B^T = [[4,0,-5,0,1,0],[0,-4,-4,1,1,0],[0,4,-4,-1,1,0],[0,-2,-1,2,1,0],
  //        [0,2,-1,-2,1,0],[0,4,0,-5,0,1]]
  static inline void input(const vf* d, vf* r) {
    const vf a = d[4] - 4.0f * d[2], b = d[3] - 4.0f * d[1];
    const vf c = d[4] - d[2], e = 2.0f * (d[3] - d[1]);
    r[0] = 4.0f * d[0] - 5.0f * d[2] + d[4];
    r[1] = a + b;
    r[2] = a - b;
    r[3] = c + e;
    r[4] = c - e;
    r[5] = 4.0f * d[1] - 5.0f * d[3] + d[5];
  }
  // A^T = [[1,1,1,1,1,0],[0,1,-1,2,-2,0],[0,1,1,4,4,0],[0,1,-1,8,-8,1]]
  static inline void output(const vf* m, vf* o) {
    const vf s12 = m[1] + m[2], d12 = m[1] - m[2], s34 = m[3] + m[4], d34 = m[3] - m[4];
    o[0] = m[0] + s12 + s34;
    o[1] = d12 + 2.0f * d34;
    o[2] = s12 + 4.0f * s34;
    o[3] = d12 + 8.0f * d34 + m[5];
  }
};

// B^T d B for the channels of one TxT tile: v[pos][c] at dst + pos * plane + c. The
// tile's pixel (i, j) is at rows[i] + (x0 + j) * channels; a null row or a column
// outside the image (border tiles only) reads as zero.
template <int M, bool kBorder>
inline void transform_channels(const float* const* rows, int64_t x0, int64_t width,
                               int64_t channels, float* dst, int64_t plane) {
  constexpr int T = Tile<M>::T;
  bool col_ok[T];
  for (int j = 0; j < T; ++j) col_ok[j] = !kBorder || (x0 + j >= 0 && x0 + j < width);
  for (int64_t c = 0; c < channels; c += kLanes) {
    vf r[T][T];  // B^T d, one column at a time
    for (int j = 0; j < T; ++j) {
      vf column[T], transformed[T];
      for (int i = 0; i < T; ++i)
        column[i] = !kBorder || (rows[i] && col_ok[j])
                        ? load(rows[i] + (x0 + j) * channels + c)
                        : vf{};
      Tile<M>::input(column, transformed);
      for (int i = 0; i < T; ++i) r[i][j] = transformed[i];
    }
    for (int i = 0; i < T; ++i) {
      vf transformed[T];
      Tile<M>::input(r[i], transformed);
      for (int j = 0; j < T; ++j) store(dst + (T * i + j) * plane + c, transformed[j]);
    }
  }
}

// Transformed inputs of tiles [tx0, tx0 + count) of tile row ty: v[pos][tile][c], the
// channels of x first, then those of x2. Tiles past the image's right edge are zero.
template <int M>
void transform_inputs(const Conv& cv, int64_t n, int64_t ty, int64_t tx0, int64_t count,
                      float* v) {
  constexpr int T = Tile<M>::T;
  const int64_t plane = cv.block * cv.Cin, c2 = cv.Cin - cv.C1;
  const float* first[T];
  const float* second[T];
  bool rows_inside = true;
  for (int i = 0; i < T; ++i) {
    const int64_t y = M * ty - 1 + i;
    const bool inside = y >= 0 && y < cv.H;
    first[i] = inside ? cv.x + (n * cv.H + y) * cv.W * cv.C1 : nullptr;
    second[i] = inside && c2 ? cv.x2 + (n * cv.H + y) * cv.W * c2 : nullptr;
    rows_inside &= inside;
  }
  for (int64_t t = 0; t < cv.block; ++t) {
    float* dst = v + t * cv.Cin;
    if (t >= count) {  // past the right edge: zeros, whose products are dropped anyway
      for (int p = 0; p < T * T; ++p) memset(dst + p * plane, 0, cv.Cin * sizeof(float));
      continue;
    }
    const int64_t x0 = M * (tx0 + t) - 1;
    if (rows_inside && x0 >= 0 && x0 + T - 1 < cv.W) {
      transform_channels<M, false>(first, x0, cv.W, cv.C1, dst, plane);
      transform_channels<M, false>(second, x0, cv.W, c2, dst + cv.C1, plane);
    } else {
      transform_channels<M, true>(first, x0, cv.W, cv.C1, dst, plane);
      transform_channels<M, true>(second, x0, cv.W, c2, dst + cv.C1, plane);
    }
  }
}

// m[rows][cout block] = a[rows][Cin] @ b[Cin][Cout block] for R rows and NV vectors of
// output channels, all accumulators in registers.
template <int R, int NV>
inline void product_tile(const float* a, const float* b, float* m, int64_t cin, int64_t cout) {
  vf acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < NV; ++j) acc[r][j] = vf{};
  for (int64_t k = 0; k < cin; ++k) {
    vf w[NV];
    for (int j = 0; j < NV; ++j) w[j] = load(b + k * cout + j * kLanes);
    for (int r = 0; r < R; ++r) {
      const float s = a[r * cin + k];  // scalar * vector: one broadcast
      for (int j = 0; j < NV; ++j) acc[r][j] += s * w[j];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < NV; ++j) store(m + r * cout + j * kLanes, acc[r][j]);
}

template <int P, int R, int NV>
void products(const Conv& cv, const float* v, float* m) {
  const int64_t cin = cv.Cin, cout = cv.Cout;
  for (int pos = 0; pos < P; ++pos) {
    const float* a = v + pos * cv.block * cin;
    const float* b = cv.u + pos * cin * cout;
    float* out = m + pos * cv.block * cout;
    for (int64_t c0 = 0; c0 < cout; c0 += NV * kLanes)
      for (int64_t t = 0; t < cv.block; t += R)
        product_tile<R, NV>(a + t * cin, b + c0, out + t * cout + c0, cin, cout);
  }
}

// Output tiles from the products: A^T m A, plus the bias, then the ReLU; pixels past the
// image's bottom or right edge are dropped.
template <int M>
void transform_outputs(const Conv& cv, int64_t n, int64_t ty, int64_t tx0, int64_t count,
                       const float* m) {
  constexpr int T = Tile<M>::T;
  const int64_t cout = cv.Cout, plane = cv.block * cout;
  float* image = cv.out + n * cv.H * cv.W * cout;
  const vf zero = vf{};
  const int64_t y0 = M * ty, rows = cv.H - y0 < M ? cv.H - y0 : M;
  for (int64_t t = 0; t < count; ++t) {
    const int64_t x0 = M * (tx0 + t), cols = cv.W - x0 < M ? cv.W - x0 : M;
    for (int64_t c = 0; c < cout; c += kLanes) {
      const float* src = m + t * cout + c;
      vf r[M][T];  // A^T m, one column at a time
      for (int j = 0; j < T; ++j) {
        vf column[T], transformed[M];
        for (int i = 0; i < T; ++i) column[i] = load(src + (T * i + j) * plane);
        Tile<M>::output(column, transformed);
        for (int i = 0; i < M; ++i) r[i][j] = transformed[i];
      }
      const vf b = cv.bias ? load(cv.bias + c) : zero;
      for (int64_t i = 0; i < rows; ++i) {
        vf values[M];
        Tile<M>::output(r[i], values);
        float* row = image + ((y0 + i) * cv.W + x0) * cout + c;
        for (int64_t j = 0; j < cols; ++j) {
          vf value = values[j] + b;
          if (cv.relu) value = value > zero ? value : zero;
          store(row + j * cout, value);
        }
      }
    }
  }
}

typedef void (*Products)(const Conv&, const float*, float*);

// Register blocking by the output channels: NV vectors wide, R rows; R * NV
// accumulators plus NV weight vectors and one broadcast fit the register file.
template <int P>
Products products_for(int64_t cout, int64_t* rows) {
  const int64_t vectors = cout / kLanes;
#if defined(__AVX512F__)
  if (vectors % 4 == 0) return *rows = 6, Products(products<P, 6, 4>);
  if (vectors % 2 == 0) return *rows = 12, Products(products<P, 12, 2>);
  return *rows = 12, Products(products<P, 12, 1>);
#else
  if (vectors % 2 == 0) return *rows = 6, Products(products<P, 6, 2>);
  return *rows = 12, Products(products<P, 12, 1>);
#endif
}

// Transformed inputs and products of one block: about 128 KiB, resident in L2 beside the
// weights (blocks of ~512 KiB measured 15-20 % slower).
constexpr int64_t kBlockFloats = 32768;

// Tile rows [first, last) of the flattened (n, ty) range; 0, or -2 without memory.
template <int M>
int run_rows(const Conv& cv, Products run, int64_t first, int64_t last) {
  constexpr int64_t P = Tile<M>::T * Tile<M>::T;
  if (first >= last) return 0;
  const size_t floats = static_cast<size_t>(P * cv.block * (cv.Cin + cv.Cout));
  float* buffer = static_cast<float*>(aligned_alloc(64, (floats * 4 + 63) / 64 * 64));
  if (buffer == nullptr) return -2;
  float* v = buffer;
  float* m = buffer + P * cv.block * cv.Cin;
  for (int64_t row = first; row < last; ++row) {
    const int64_t n = row / cv.tiles_h, ty = row % cv.tiles_h;
    for (int64_t tx0 = 0; tx0 < cv.tiles_w; tx0 += cv.block) {
      const int64_t count = cv.tiles_w - tx0 < cv.block ? cv.tiles_w - tx0 : cv.block;
      transform_inputs<M>(cv, n, ty, tx0, count, v);
      run(cv, v, m);
      transform_outputs<M>(cv, n, ty, tx0, count, m);
    }
  }
  free(buffer);
  return 0;
}

template <int M>
int convolve(const float* x, int64_t C1, const float* x2, int64_t N, int64_t H, int64_t W,
             int64_t Cin, const float* u, const float* bias, int64_t Cout, int64_t relu,
             float* out, int64_t row_begin, int64_t row_end, int64_t threads) {
  constexpr int64_t P = Tile<M>::T * Tile<M>::T;
  const int64_t tiles_h = (H + M - 1) / M, tiles_w = (W + M - 1) / M;
  if (row_begin < 0 || row_end > N * tiles_h || row_begin > row_end) return -1;
  int64_t rows = 0;
  const Products run = products_for<P>(Cout, &rows);
  int64_t block = kBlockFloats / (P * (Cin + Cout));  // a whole number of rows
  block = block < rows ? rows : block / rows * rows;
  if (block > tiles_w) block = (tiles_w + rows - 1) / rows * rows;
  const Conv cv{x, x2, u, bias, out, N, H, W, Cin, C1, Cout, relu != 0, tiles_h, tiles_w, block};
  const int64_t total = row_end - row_begin;
  if (threads > total) threads = total;
#ifdef _OPENMP
  if (threads > 1) {
    int code = 0;
#pragma omp parallel num_threads(static_cast<int>(threads)) reduction(min : code)
    {
      const int64_t k = omp_get_num_threads(), i = omp_get_thread_num();
      code = run_rows<M>(cv, run, row_begin + total * i / k, row_begin + total * (i + 1) / k);
    }
    return code;
  }
#endif
  return run_rows<M>(cv, run, row_begin, row_end);
}

}  // namespace

extern "C" {

// Vector width the library was built for: channel counts must be multiples of it.
int64_t transtic_winograd_lanes(void) { return kLanes; }

// 1 when built with OpenMP (one call spreads its rows over `threads` threads).
int64_t transtic_winograd_openmp(void) {
#ifdef _OPENMP
  return 1;
#else
  return 0;
#endif
}

// The conv of the channel concatenation of x (C1 channels) and x2 (Cin - C1 channels;
// null when C1 == Cin), both NHWC, by F(tile x tile, 3x3) for tile 2 or 4 (u holds the
// weights transformed for that tile), for output rows [tile * row_begin, tile * row_end)
// of every image, rows counted over the batch (row r = image r / ceil(H / tile), tile
// row r % ceil(H / tile)). Returns 0, -1 for unsupported shapes (channel counts must be
// whole vectors) and -2 when scratch memory cannot be allocated.
int transtic_winograd_conv3x3(const float* x, int64_t C1, const float* x2, int64_t N, int64_t H,
                              int64_t W, int64_t Cin, const float* u, const float* bias,
                              int64_t Cout, int64_t relu, float* out, int64_t tile,
                              int64_t row_begin, int64_t row_end, int64_t threads) {
  if (N <= 0 || H <= 0 || W <= 0 || Cin <= 0 || Cout <= 0 || Cin % kLanes || Cout % kLanes)
    return -1;
  if (C1 <= 0 || C1 > Cin || C1 % kLanes || (C1 < Cin && x2 == nullptr)) return -1;
  if (tile == 2)
    return convolve<2>(x, C1, x2, N, H, W, Cin, u, bias, Cout, relu, out, row_begin, row_end,
                       threads);
  if (tile == 4)
    return convolve<4>(x, C1, x2, N, H, W, Cin, u, bias, Cout, relu, out, row_begin, row_end,
                       threads);
  return -1;
}

}  // extern "C"
