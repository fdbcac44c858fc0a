// Planted kernels for cuda/mma.cuh's ldmatrix, cp.async and TF32 wrappers under the
// emulator (tests/infrastructure/test_emu_async_copy.py) and NVRTC. One warp per block
// unless stated. The test inlines mma.cuh (and half.cuh) as gpuops.kernels.source does.
#include "mma.cuh"

// The four ldmatrix forms on 32 rows of 8 16-bit values, row r at tile[r][0..7] (rows
// padded to 16 values, the padding left NaN-filled: only 16 bytes per row may be read).
// Lane l gives row l (x4: row l % 8 of matrix l / 8; x2: lanes 0..15, the others' rows
// are ignored). out[128 v + 4 l + i]: variant v (x4, x4.trans, x2, x2.trans), lane l,
// register i (x2: i < 2, the rest left as it was).
extern "C" __global__ void ldmatrix_forms(const unsigned short* __restrict__ m,
                                          unsigned* __restrict__ out) {
    __shared__ __align__(16) unsigned short tile[32][16];
    const int lane = threadIdx.x;
    for (int c = 0; c < 8; ++c) tile[lane][c] = m[8 * lane + c];
    __syncthreads();
    unsigned r4[4], r2[2];
    ldmatrix_x4(r4, tile[lane]);
    for (int i = 0; i < 4; ++i) out[4 * lane + i] = r4[i];
    ldmatrix_x4_trans(r4, tile[lane]);
    for (int i = 0; i < 4; ++i) out[128 + 4 * lane + i] = r4[i];
    ldmatrix_x2(r2, tile[lane]);
    for (int i = 0; i < 2; ++i) out[256 + 4 * lane + i] = r2[i];
    ldmatrix_x2_trans(r2, tile[lane]);
    for (int i = 0; i < 2; ++i) out[384 + 4 * lane + i] = r2[i];
}

// An 8 x 64 tile of 16-bit values (8 rows of 128 bytes: eight 16-byte chunks) brought in
// by cp.async (lane l: chunk l % 8 of rows l / 8 and 4 + l / 8: each quarter-warp stores
// one whole row), then read as four 8x8 matrices by one ldmatrix_x4: matrix i = chunk i of
// the 8 rows. Stored plainly (chunk c of row r at chunk c) the 8 rows of a matrix are 128
// bytes apart, all on the same 4 banks: 8 wavefronts per matrix. XOR-swizzled (chunk c of
// row r at chunk c ^ r) they cover the 32 banks: one wavefront per matrix. The fragments
// (out[4 l + i]) are the same.
extern "C" __global__ void ldmatrix_banks(const unsigned short* __restrict__ src,
                                          unsigned* __restrict__ out, int swizzle) {
    __shared__ __align__(128) unsigned short tile[8][64];
    const int lane = threadIdx.x, chunk = lane % 8;
    for (int r = lane / 8; r < 8; r += 4) {
        const int at = swizzle ? chunk ^ r : chunk;
        cp_async_16(&tile[r][8 * at], src + 64 * r + 8 * chunk, 16);
    }
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    const int i = lane / 8, r = lane % 8;
    unsigned frag[4];
    ldmatrix_x4(frag, &tile[r][8 * (swizzle ? i ^ r : i)]);
    for (int q = 0; q < 4; ++q) out[4 * lane + q] = frag[q];
}

// cp.async with src_bytes = nbytes[l] (0..16) for lane l: the 16 bytes at src + 16 l (not
// read at all, a null source, when nbytes[l] is 0) into a shared row, then copied out.
extern "C" __global__ void cp_async_zero_fill(const unsigned char* __restrict__ src,
                                              const int* __restrict__ nbytes,
                                              unsigned char* __restrict__ out) {
    __shared__ __align__(16) unsigned char rows[32][16];
    const int lane = threadIdx.x, n = nbytes[lane];
    cp_async_16(rows[lane], n ? src + 16 * lane : nullptr, n);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    for (int b = 0; b < 16; ++b) out[16 * lane + b] = rows[lane][b];
}

// A two-stage pipeline of one float4 per lane and stage: y[0..127] = stage 0 (x[0..127]),
// y[128..255] = stage 1 (x[128..255]). mode 0 waits correctly (wait<1>: stage 0 landed;
// wait<0>: stage 1); mode 1 reads stage 1 after wait<1> and a __syncthreads (too early: it
// is still in flight); mode 2 forgets to commit stage 1: then wait<1> may leave stage 0
// (the one committed group) pending, and wait<0> does not cover the uncommitted stage 1.
extern "C" __global__ void cp_async_pipeline(const float* __restrict__ x, float* __restrict__ y,
                                             int mode) {
    __shared__ __align__(16) float stage[2][128];
    const int lane = threadIdx.x;
    cp_async_16(&stage[0][4 * lane], x + 4 * lane, 16);
    cp_async_commit();
    cp_async_16(&stage[1][4 * lane], x + 128 + 4 * lane, 16);
    if (mode != 2) cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    for (int j = 0; j < 4; ++j) y[4 * lane + j] = stage[0][4 * lane + j];
    if (mode != 1) cp_async_wait<0>();
    __syncthreads();
    for (int j = 0; j < 4; ++j) y[128 + 4 * lane + j] = stage[1][4 * lane + j];
}

// y[i] = to_tf32(x[i]), one thread per element.
extern "C" __global__ void tf32_round(const float* __restrict__ x, unsigned* __restrict__ y,
                                      long long n) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = to_tf32(x[i]);
}

// D = A B + C (A 16x8, B 8x8, C and D 16x8 float32, row-major) by one mma_m16n8k8_tf32,
// the fragments loaded per the PTX layout, the operands rounded by to_tf32 (round 1) or
// passed as raw float bits (round 0: the mma uses their upper 19 bits, a truncation).
extern "C" __global__ void mma_tf32(const float* __restrict__ A, const float* __restrict__ B,
                                    const float* __restrict__ C, float* __restrict__ D,
                                    int round) {
    const int lane = threadIdx.x, g = lane / 4, t = lane % 4;
    unsigned a[4], b[2];
    float c[4];
    for (int i = 0; i < 4; ++i) {
        const float v = A[8 * (g + 8 * (i % 2)) + t + 4 * (i / 2)];
        a[i] = round ? to_tf32(v) : __float_as_uint(v);
    }
    for (int i = 0; i < 2; ++i) {
        const float v = B[8 * (t + 4 * i) + g];
        b[i] = round ? to_tf32(v) : __float_as_uint(v);
    }
    for (int i = 0; i < 4; ++i) c[i] = C[8 * (g + 8 * (i / 2)) + 2 * t + i % 2];
    mma_m16n8k8_tf32(c, a, b);
    for (int i = 0; i < 4; ++i) D[8 * (g + 8 * (i / 2)) + 2 * t + i % 2] = c[i];
}

// D = A B (A 16x16, B 16x8 float16 as bits, D 16x8 float32, row-major) the way a GEMM
// feeds mma_m16n8k16: A and B staged by cp.async, A's fragments by ldmatrix_x4, B's by
// ldmatrix_x2_trans from its k-major tile (b_kmajor 1) or by ldmatrix_x2 from B^T stored
// n-major (b_kmajor 0: Bt is 8x16, Bt[n][k] = B[k][n]).
extern "C" __global__ void ldmatrix_mma(const unsigned short* __restrict__ A,
                                        const unsigned short* __restrict__ Bsrc,
                                        float* __restrict__ D, int b_kmajor) {
    __shared__ __align__(16) unsigned short As[16][16], Bs[16 * 8];
    const int lane = threadIdx.x, g = lane / 4, t = lane % 4;
    cp_async_16(&As[lane / 2][8 * (lane % 2)], A + 8 * lane, 16);  // 32 chunks of 8
    if (lane < 16) cp_async_16(&Bs[8 * lane], Bsrc + 8 * lane, 16);  // 16 chunks of 8
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    unsigned a[4], b[2];
    const int m = lane / 8;  // matrix m: rows 8 (m % 2) .., columns 8 (m / 2) ..
    ldmatrix_x4(a, &As[8 * (m % 2) + lane % 8][8 * (m / 2)]);
    if (b_kmajor)
        ldmatrix_x2_trans(b, &Bs[8 * (lane % 16)]);  // row k = lane of B (8 values)
    else
        ldmatrix_x2(b, &Bs[16 * (lane % 8) + 8 * ((lane / 8) % 2)]);  // Bt row n, k-half
    float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    mma_m16n8k16<__half>(c, a, b);
    for (int i = 0; i < 4; ++i) D[8 * (g + 8 * (i / 2)) + 2 * t + i % 2] = c[i];
}

// cp.async into dynamic shared memory, then ldmatrix_x4 from it: lane l copies row l (8
// 16-bit values) of m into row l of the buffer; out[4 l + i] = the x4 fragments. Launched
// with fewer than 512 dynamic bytes, the rows past them are outside shared memory.
extern "C" __global__ void dynamic_rows(const unsigned short* __restrict__ m,
                                        unsigned* __restrict__ out) {
    extern __shared__ __align__(16) unsigned short rows[];
    const int lane = threadIdx.x;
    cp_async_16(rows + 8 * lane, m + 8 * lane, 16);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    unsigned r[4];
    ldmatrix_x4(r, rows + 8 * lane);
    for (int i = 0; i < 4; ++i) out[4 * lane + i] = r[i];
}
