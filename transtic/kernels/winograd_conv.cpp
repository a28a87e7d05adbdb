// 3x3 stride-1 convolutions (padding 1) of the prompt generator by Winograd's minimal
// filtering F(2x2, 3x3), float32, channels-last (NHWC) in and out, bias and an optional
// ReLU applied on the way out.
//
// Why: the instance prompt generator is a full-resolution U-Net whose 3x3 convs are a
// third of an encode, and oneDNN already runs them at this CPU's float32 FMA peak, so
// only fewer products can make them faster. F(2x2, 3x3) computes each 2x2 output tile
// from a 4x4 input tile with 16 products per (input, output) channel pair instead of
// 36: the 4x4 tiles are transformed (additions only), 16 independent matrix products
// over the channels follow, and the 2x2 results are transformed back. The transform
// matrices hold only 0, +-1 and (in the weights' transform, done once in Python) 1/2,
// so the rounding stays that of an ordinary float32 conv (relative error ~1e-6).
//
// Work is cut into blocks of tiles along one row of tiles; a block's transformed
// inputs and products stay in the core's L2 cache, and the weights of one output
// channel block stay in L1. Rows of tiles are spread over OpenMP threads (PyTorch's
// own runtime where the library is built with it). Every output is computed by one
// thread in one fixed order, so results do not depend on the thread count.
//
// Written with GCC vector extensions, like window_attention.cpp: the same source is
// AVX-512, AVX2 or SSE code depending on the -m flags it is compiled with.

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

#if defined(__AVX512F__)
constexpr int kLanes = 16;
#elif defined(__AVX__)
constexpr int kLanes = 8;
#else
constexpr int kLanes = 4;
#endif
typedef float vf __attribute__((vector_size(kLanes * 4)));
typedef float vf_u __attribute__((vector_size(kLanes * 4), aligned(4)));

inline vf load(const float* p) { return *reinterpret_cast<const vf_u*>(p); }
inline void store(float* p, vf v) { *reinterpret_cast<vf_u*>(p) = v; }

struct Conv {
  const float* x;     // (N, H, W, C1): the first C1 input channels
  const float* x2;    // (N, H, W, Cin - C1): the rest (the second of two concatenated)
  const float* u;     // (16, Cin, Cout): the transformed weights, position-major
  const float* bias;  // (Cout) or null
  float* out;         // (N, H, W, Cout)
  int64_t N, H, W, Cin, C1, Cout;
  int relu;
  int64_t tiles_h, tiles_w, block;  // tiles per block (a multiple of every row count below)
};

// B^T d B for the channels of one 4x4 tile, with B^T = [[1,0,-1,0],[0,1,1,0],
// [0,-1,1,0],[0,1,0,-1]]: v[pos][c] at dst + pos * plane + c. The tile's pixel (i, j)
// is at rows[i] + (x0 + j) * channels; a null row or a column outside the image
// (border tiles only) reads as zero.
template <bool kBorder>
inline void transform_channels(const float* const* rows, int64_t x0, int64_t width,
                               int64_t channels, float* dst, int64_t plane) {
  bool col_ok[4];
  for (int j = 0; j < 4; ++j) col_ok[j] = !kBorder || (x0 + j >= 0 && x0 + j < width);
  for (int64_t c = 0; c < channels; c += kLanes) {
    vf d[4][4];
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j)
        d[i][j] = !kBorder || (rows[i] && col_ok[j]) ? load(rows[i] + (x0 + j) * channels + c)
                                                      : vf{};
    vf r[4][4];
    for (int j = 0; j < 4; ++j) {
      r[0][j] = d[0][j] - d[2][j];
      r[1][j] = d[1][j] + d[2][j];
      r[2][j] = d[2][j] - d[1][j];
      r[3][j] = d[1][j] - d[3][j];
    }
    for (int i = 0; i < 4; ++i) {
      store(dst + (4 * i + 0) * plane + c, r[i][0] - r[i][2]);
      store(dst + (4 * i + 1) * plane + c, r[i][1] + r[i][2]);
      store(dst + (4 * i + 2) * plane + c, r[i][2] - r[i][1]);
      store(dst + (4 * i + 3) * plane + c, r[i][1] - r[i][3]);
    }
  }
}

// Transformed inputs of tiles [tx0, tx0 + count) of tile row ty: v[pos][tile][c], the
// channels of x first, then those of x2. Tiles past the image's right edge are zero.
void transform_inputs(const Conv& cv, int64_t n, int64_t ty, int64_t tx0, int64_t count,
                      float* v) {
  const int64_t plane = cv.block * cv.Cin, c2 = cv.Cin - cv.C1;
  const float* first[4];
  const float* second[4];
  bool rows_inside = true;
  for (int i = 0; i < 4; ++i) {
    const int64_t y = 2 * ty - 1 + i;
    const bool inside = y >= 0 && y < cv.H;
    first[i] = inside ? cv.x + (n * cv.H + y) * cv.W * cv.C1 : nullptr;
    second[i] = inside && c2 ? cv.x2 + (n * cv.H + y) * cv.W * c2 : nullptr;
    rows_inside &= inside;
  }
  for (int64_t t = 0; t < cv.block; ++t) {
    float* dst = v + t * cv.Cin;
    if (t >= count) {  // past the right edge: zeros, whose products are dropped anyway
      for (int p = 0; p < 16; ++p) memset(dst + p * plane, 0, cv.Cin * sizeof(float));
      continue;
    }
    const int64_t x0 = 2 * (tx0 + t) - 1;
    if (rows_inside && x0 >= 0 && x0 + 3 < cv.W) {
      transform_channels<false>(first, x0, cv.W, cv.C1, dst, plane);
      transform_channels<false>(second, x0, cv.W, c2, dst + cv.C1, plane);
    } else {
      transform_channels<true>(first, x0, cv.W, cv.C1, dst, plane);
      transform_channels<true>(second, x0, cv.W, c2, dst + cv.C1, plane);
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

template <int R, int NV>
void products(const Conv& cv, const float* v, float* m) {
  const int64_t cin = cv.Cin, cout = cv.Cout;
  for (int pos = 0; pos < 16; ++pos) {
    const float* a = v + pos * cv.block * cin;
    const float* b = cv.u + pos * cin * cout;
    float* out = m + pos * cv.block * cout;
    for (int64_t c0 = 0; c0 < cout; c0 += NV * kLanes)
      for (int64_t t = 0; t < cv.block; t += R)
        product_tile<R, NV>(a + t * cin, b + c0, out + t * cout + c0, cin, cout);
  }
}

// Output tiles from the products: A^T m A with A^T = [[1,1,1,0],[0,1,-1,-1]], plus the
// bias, then the ReLU; pixels past the image's bottom or right edge are dropped.
void transform_outputs(const Conv& cv, int64_t n, int64_t ty, int64_t tx0, int64_t count,
                       const float* m) {
  const int64_t cout = cv.Cout, plane = cv.block * cout;
  float* image = cv.out + n * cv.H * cv.W * cout;
  const vf zero = vf{};
  for (int64_t t = 0; t < count; ++t) {
    const int64_t tx = tx0 + t, y0 = 2 * ty, x0 = 2 * tx;
    const bool second_row = y0 + 1 < cv.H, second_col = x0 + 1 < cv.W;
    for (int64_t c = 0; c < cout; c += kLanes) {
      const float* src = m + t * cout + c;
      vf s[4][4];
      for (int p = 0; p < 16; ++p) s[p / 4][p % 4] = load(src + p * plane);
      vf r[2][4];
      for (int j = 0; j < 4; ++j) {
        r[0][j] = s[0][j] + s[1][j] + s[2][j];
        r[1][j] = s[1][j] - s[2][j] - s[3][j];
      }
      const vf b = cv.bias ? load(cv.bias + c) : zero;
      for (int i = 0; i < 2; ++i) {
        if (i == 1 && !second_row) break;
        vf out0 = r[i][0] + r[i][1] + r[i][2] + b;
        vf out1 = r[i][1] - r[i][2] - r[i][3] + b;
        if (cv.relu) {
          out0 = out0 > zero ? out0 : zero;
          out1 = out1 > zero ? out1 : zero;
        }
        float* row = image + ((y0 + i) * cv.W + x0) * cout + c;
        store(row, out0);
        if (second_col) store(row + cout, out1);
      }
    }
  }
}

typedef void (*Products)(const Conv&, const float*, float*);

// Register blocking by the output channels: NV vectors wide, R rows; R * NV
// accumulators plus NV weight vectors and one broadcast fit the register file.
Products products_for(int64_t cout, int64_t* rows) {
  const int64_t vectors = cout / kLanes;
#if defined(__AVX512F__)
  if (vectors % 4 == 0) return *rows = 6, Products(products<6, 4>);
  if (vectors % 2 == 0) return *rows = 12, Products(products<12, 2>);
  return *rows = 12, Products(products<12, 1>);
#else
  if (vectors % 2 == 0) return *rows = 6, Products(products<6, 2>);
  return *rows = 12, Products(products<12, 1>);
#endif
}

// Tile rows [first, last) of the flattened (n, ty) range; 0, or -2 without memory.
int run_rows(const Conv& cv, Products run, int64_t first, int64_t last) {
  if (first >= last) return 0;
  const size_t floats = static_cast<size_t>(16 * cv.block * (cv.Cin + cv.Cout));
  float* buffer = static_cast<float*>(aligned_alloc(64, (floats * 4 + 63) / 64 * 64));
  if (buffer == nullptr) return -2;
  float* v = buffer;
  float* m = buffer + 16 * cv.block * cv.Cin;
  for (int64_t row = first; row < last; ++row) {
    const int64_t n = row / cv.tiles_h, ty = row % cv.tiles_h;
    for (int64_t tx0 = 0; tx0 < cv.tiles_w; tx0 += cv.block) {
      const int64_t count = cv.tiles_w - tx0 < cv.block ? cv.tiles_w - tx0 : cv.block;
      transform_inputs(cv, n, ty, tx0, count, v);
      run(cv, v, m);
      transform_outputs(cv, n, ty, tx0, count, m);
    }
  }
  free(buffer);
  return 0;
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
// null when C1 == Cin), both NHWC, for output rows [2 * row_begin, 2 * row_end) of every
// image, rows counted over the batch (row r = image r / ceil(H / 2), tile row
// r % ceil(H / 2)). Returns 0, -1 for unsupported shapes (channel counts must be whole
// vectors) and -2 when scratch memory cannot be allocated.
int transtic_winograd_conv3x3(const float* x, int64_t C1, const float* x2, int64_t N, int64_t H,
                              int64_t W, int64_t Cin, const float* u, const float* bias,
                              int64_t Cout, int64_t relu, float* out, int64_t row_begin,
                              int64_t row_end, int64_t threads) {
  if (N <= 0 || H <= 0 || W <= 0 || Cin <= 0 || Cout <= 0 || Cin % kLanes || Cout % kLanes)
    return -1;
  if (C1 <= 0 || C1 > Cin || C1 % kLanes || (C1 < Cin && x2 == nullptr)) return -1;
  const int64_t tiles_h = (H + 1) / 2, tiles_w = (W + 1) / 2;
  if (row_begin < 0 || row_end > N * tiles_h || row_begin > row_end) return -1;
  int64_t rows = 0;
  const Products run = products_for(Cout, &rows);
  // a block's transformed inputs and products: about 128 KiB (L2-resident beside the
  // weights; larger blocks measured slower), a whole number of rows
  int64_t block = 2048 / (Cin + Cout);
  block = block < rows ? rows : block / rows * rows;
  if (block > tiles_w) block = (tiles_w + rows - 1) / rows * rows;
  const Conv cv{x, x2, u, bias, out, N, H, W, Cin, C1, Cout, relu != 0, tiles_h, tiles_w, block};
  const int64_t total = row_end - row_begin;
  if (threads > total) threads = total;
  int code = 0;
#ifdef _OPENMP
  if (threads > 1) {
#pragma omp parallel num_threads(static_cast<int>(threads)) reduction(min : code)
    {
      const int64_t k = omp_get_num_threads(), i = omp_get_thread_num();
      code = run_rows(cv, run, row_begin + total * i / k, row_begin + total * (i + 1) / k);
    }
    return code;
  }
#endif
  return run_rows(cv, run, row_begin, row_end);
}

}  // extern "C"
