/* gpuops' native 16-bit conversions (gpuops/native/__init__.py builds and loads this file).
 * Each function converts `n` elements of one contiguous buffer into another, bit for bit as
 * NumPy's float16 casts and ml_dtypes' bfloat16 casts (astype):
 *   widen_f16   float16 -> float32: exact; NaN payloads kept (a signaling NaN stays one).
 *   narrow_f16  float32 -> float16: round to nearest even; past 65520 -> ±inf; NaN: the
 *               payload's top 10 bits (0x7c01 if they are all 0: it stays a NaN), not quieted.
 *   widen_bf16  bfloat16 -> float32: the 16 bits shifted left by 16.
 *   narrow_bf16 float32 -> bfloat16: round to nearest even; NaN -> ±0x7fc0 (quiet, sign kept).
 * The loops are branch-free (every case computed, one selected) so the compiler vectorizes
 * them; only integer arithmetic and one float32 addition whose result is a normal number
 * (float16's subnormals), so FTZ/DAZ modes cannot change a result. Built with -mf16c -mavx2,
 * float16 converts 8 elements at a time by the F16C instructions (IEEE conversions, round
 * to nearest even; 16 at a time by their AVX-512 forms with -mavx512f), except blocks with
 * a NaN: F16C quiets signaling NaNs, NumPy does not; those blocks (and the tail) take the
 * portable loop. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__F16C__) && defined(__AVX2__)
#include <immintrin.h>
#define F16C_BLOCKS 1
#if defined(__AVX512F__)
#define AVX512_BLOCKS 1  /* 16 elements at a time: about twice the 8-wide loops' speed */
#endif
#endif

static inline uint32_t float_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float bits_float(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static void widen_f16_portable(const uint16_t *restrict x, uint32_t *restrict y, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t h = x[i];
        uint32_t sign = (h & 0x8000u) << 16, a = h & 0x7fffu;
        /* normal: exponent rebiased (+112 << 23); inf/NaN: exponent 255, payload kept;
           subnormal or zero: a * 2^-24, exact and normal in float32 */
        uint32_t normal = (a << 13) + 0x38000000u;
        uint32_t special = 0x7f800000u | (a << 13);
        uint32_t small = float_bits((float)(int32_t)a * 0x1p-24f);
        uint32_t r = a >= 0x7c00u ? special : a >= 0x0400u ? normal : small;
        y[i] = sign | r;
    }
}

static void narrow_f16_portable(const uint32_t *restrict x, uint16_t *restrict y, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t f = x[i];
        uint32_t sign = (f >> 16) & 0x8000u, a = f & 0x7fffffffu;
        uint32_t payload = (a >> 13) & 0x3ffu;
        uint32_t nan = 0x7c00u | (payload ? payload : 1u);
        /* normal float16 (|f| >= 2^-14): round to nearest even at bit 13, rebias */
        uint32_t normal = (a + 0xfffu + ((a >> 13) & 1u) - 0x38000000u) >> 13;
        /* |f| < 2^-14: 0.5 + |f| rounds |f| to a multiple of 2^-24 (the float32 unit at
           0.5) by the FPU, to nearest even; its low bits are the float16 subnormal */
        uint32_t small = float_bits(bits_float(a < 0x38800000u ? a : 0u) + 0.5f) - 0x3f000000u;
        uint32_t r = a > 0x7f800000u ? nan : a >= 0x477ff000u ? 0x7c00u
                   : a >= 0x38800000u ? normal : small;
        y[i] = (uint16_t)(sign | r);
    }
}

void widen_f16(const uint16_t *restrict x, uint32_t *restrict y, size_t n) {
    size_t i = 0;
#ifdef AVX512_BLOCKS
    const __m256i magnitude16 = _mm256_set1_epi16(0x7fff), inf16 = _mm256_set1_epi16(0x7c00);
    for (; i + 16 <= n; i += 16) {
        __m256i h = _mm256_loadu_si256((const __m256i *)(x + i));
        if (_mm256_movemask_epi8(_mm256_cmpgt_epi16(_mm256_and_si256(h, magnitude16), inf16)))
            widen_f16_portable(x + i, y + i, 16);  /* a NaN among the 16 */
        else
            _mm512_storeu_ps((float *)(y + i), _mm512_cvtph_ps(h));
    }
#endif
#ifdef F16C_BLOCKS
    const __m128i magnitude = _mm_set1_epi16(0x7fff), inf = _mm_set1_epi16(0x7c00);
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(x + i));
        if (_mm_movemask_epi8(_mm_cmpgt_epi16(_mm_and_si128(h, magnitude), inf)))
            widen_f16_portable(x + i, y + i, 8);  /* a NaN among the 8 */
        else
            _mm256_storeu_ps((float *)(y + i), _mm256_cvtph_ps(h));
    }
#endif
    widen_f16_portable(x + i, y + i, n - i);
}

void narrow_f16(const uint32_t *restrict x, uint16_t *restrict y, size_t n) {
    size_t i = 0;
#ifdef AVX512_BLOCKS
    const __m512i magnitude32 = _mm512_set1_epi32(0x7fffffff);
    const __m512i inf32 = _mm512_set1_epi32(0x7f800000);
    for (; i + 16 <= n; i += 16) {
        __m512i f = _mm512_loadu_si512((const void *)(x + i));
        if (_mm512_cmpgt_epi32_mask(_mm512_and_si512(f, magnitude32), inf32))
            narrow_f16_portable(x + i, y + i, 16);  /* a NaN among the 16 */
        else
            _mm256_storeu_si256((__m256i *)(y + i),
                                _mm512_cvtps_ph(_mm512_castsi512_ps(f), _MM_FROUND_TO_NEAREST_INT));
    }
#endif
#ifdef F16C_BLOCKS
    const __m256i magnitude = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
    for (; i + 8 <= n; i += 8) {
        __m256i f = _mm256_loadu_si256((const __m256i *)(x + i));
        if (_mm256_movemask_epi8(_mm256_cmpgt_epi32(_mm256_and_si256(f, magnitude), inf)))
            narrow_f16_portable(x + i, y + i, 8);  /* a NaN among the 8 */
        else
            _mm_storeu_si128((__m128i *)(y + i),
                             _mm256_cvtps_ph(_mm256_castsi256_ps(f), _MM_FROUND_TO_NEAREST_INT));
    }
#endif
    narrow_f16_portable(x + i, y + i, n - i);
}

void widen_bf16(const uint16_t *restrict x, uint32_t *restrict y, size_t n) {
    for (size_t i = 0; i < n; i++)
        y[i] = (uint32_t)x[i] << 16;
}

void narrow_bf16(const uint32_t *restrict x, uint16_t *restrict y, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t f = x[i];
        uint32_t rounded = (f + 0x7fffu + ((f >> 16) & 1u)) >> 16;
        uint32_t nan = ((f >> 16) & 0x8000u) | 0x7fc0u;
        y[i] = (uint16_t)((f & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
    }
}
