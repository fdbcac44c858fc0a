/* gpuops' fused 16-bit elementwise programs (gpuops/native/fused.py compiles them from the
 * operators' declarations; gpuops/native/__init__.py builds this file with casts.c).
 *
 * fused_run evaluates one small program per element of a 16-bit result, block by block
 * (BLOCK elements at a time, in float32 registers that stay in the L1 cache): each
 * instruction is one float32 pass over the block, the last register is rounded once into
 * the result (or, out_kind KIND_F32, stored as float32: a gradient's term that NumPy code
 * then sums to a broadcast operand's shape before the one rounding). The rule of the NumPy
 * backend, bit for bit: the 16-bit operands widened to float32 (exactly), float32 IEEE
 * arithmetic (+ - * / correctly rounded; -ffp-contract=off keeps a*b+c two roundings, as
 * NumPy's two ufunc calls; NaN operands as x86 and NumPy: nan_order), one rounding to
 * nearest even on store (narrow_f16/narrow_bf16 of casts.c), or a lookup in a table that
 * the NumPy code computed. Operands (`data[k]`, `kinds[k]`):
 *   KIND_F16, KIND_BF16  a contiguous 16-bit array of the result's size;
 *   KIND_F32             a contiguous float32 array repeated with period `periods[k]`
 *                        (a scalar: period 1; a broadcast row: its length).
 * Instructions, four int32 each (op, destination register, a, b):
 *   OP_LOAD   r[d] = operand a
 *   OP_LOOKUP r[d] = tables[b][bits of 16-bit operand a]  (a float32 table of 65536 values
 *             computed by the operator's NumPy code: any function of one 16-bit input)
 *   OP_ADD, OP_SUB, OP_MUL, OP_DIV  r[d] = r[a] op r[b]
 *   OP_NEG    r[d] = -r[a]   (the sign bit flipped, NaN too, as numpy.negative)
 *   OP_ABS    r[d] = |r[a]|  (the sign bit cleared, NaN too, as numpy.absolute) */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

void widen_f16(const uint16_t *restrict x, uint32_t *restrict y, size_t n);
void widen_bf16(const uint16_t *restrict x, uint32_t *restrict y, size_t n);
void narrow_f16(const uint32_t *restrict x, uint16_t *restrict y, size_t n);
void narrow_bf16(const uint32_t *restrict x, uint16_t *restrict y, size_t n);

#define BLOCK 512
#define REGISTERS 8
enum { KIND_F16 = 0, KIND_BF16 = 1, KIND_F32 = 2 };
enum { OP_LOAD = 0, OP_LOOKUP = 1, OP_ADD = 2, OP_SUB = 3, OP_MUL = 4, OP_DIV = 5, OP_NEG = 6,
       OP_ABS = 7 };

/* A plain vectorized copy: glibc's memcpy takes `rep movsb` from 2 KiB on, which AMD's cores
   run at a fraction of the vector loop's speed here (measured: 2.4 against 1.3 ms for 2^22
   float32 stores in 2 KiB pieces). */
__attribute__((optimize("no-tree-loop-distribute-patterns")))
static void copy_floats(float *restrict y, const float *restrict x, size_t m) {
    for (size_t j = 0; j < m; j++)
        y[j] = x[j];
}

static void load_periodic(float *restrict r, const float *restrict x, size_t period,
                          size_t position, size_t m) {
    if (period == 1) {
        float v = x[0];
        for (size_t j = 0; j < m; j++)
            r[j] = v;
        return;
    }
    size_t k = position % period;
    while (m) {
        size_t count = period - k < m ? period - k : m;
        copy_floats(r, x + k, count);
        r += count;
        m -= count;
        k = 0;
    }
}

/* Table lookups read four 16-bit indices at once (one 64-bit load: a third fewer loads
   than one per index; x86 gathers are slower than scalar loads on AMD's cores). */
static void lookup(float *restrict r, const uint16_t *restrict x, const float *restrict table,
                   size_t m) {
    size_t j = 0;
    for (; j + 4 <= m; j += 4) {
        uint64_t v;
        memcpy(&v, x + j, 8);
        r[j] = table[v & 0xffffu];
        r[j + 1] = table[(v >> 16) & 0xffffu];
        r[j + 2] = table[(v >> 32) & 0xffffu];
        r[j + 3] = table[v >> 48];
    }
    for (; j < m; j++)
        r[j] = table[x[j]];
}

/* y = table[x] for a 16-bit result that is a function of one 16-bit input: the table holds
   the rounded results of all 65536 patterns (gpuops.native.fused: a one-input forward). */
void lookup16(const uint16_t *restrict x, const uint16_t *restrict table, uint16_t *restrict y,
              size_t n) {
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        uint64_t v, r;
        memcpy(&v, x + i, 8);
        r = (uint64_t)table[v & 0xffffu] | (uint64_t)table[(v >> 16) & 0xffffu] << 16
            | (uint64_t)table[(v >> 32) & 0xffffu] << 32 | (uint64_t)table[v >> 48] << 48;
        memcpy(y + i, &r, 8);
    }
    for (; i < n; i++)
        y[i] = table[x[i]];
}

static inline uint32_t bits_of(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float float_of(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* r = a op b with x86's NaN rule made explicit: a NaN operand comes out quieted, the first
   one if both are (SSE/AVX return their first source's NaN, and NumPy's loops pass x1
   first); the compiler may swap the operands of + and *, which would return the second. */
static inline float nan_order(float a, float b, float r) {
    uint32_t ua = bits_of(a), ub = bits_of(b);
    uint32_t nan_b = (ub & 0x7fffffffu) > 0x7f800000u ? ub | 0x400000u : bits_of(r);
    return float_of((ua & 0x7fffffffu) > 0x7f800000u ? ua | 0x400000u : nan_b);
}

#define PASS(expression) for (size_t j = 0; j < m; j++) rd[j] = (expression)
#define BINARY(op) PASS(nan_order(ra[j], rb[j], ra[j] op rb[j]))

int fused_run(const int32_t *code, int64_t instructions, const void *const *data,
              const int64_t *kinds, const int64_t *periods, const float *const *tables,
              void *out, int64_t out_kind, size_t n) {
    static __thread float registers[REGISTERS][BLOCK] __attribute__((aligned(64)));
    for (int64_t i = 0; i < instructions; i++)
        if (code[4 * i + 1] < 0 || code[4 * i + 1] >= REGISTERS)
            return -1;
    int result = code[4 * (instructions - 1) + 1];
    for (size_t start = 0; start < n; start += BLOCK) {
        size_t m = n - start < BLOCK ? n - start : BLOCK;
        for (int64_t i = 0; i < instructions; i++) {
            const int32_t *c = code + 4 * i;
            float *restrict rd = registers[c[1]];
            const float *ra = registers[c[2] & (REGISTERS - 1)];
            const float *rb = registers[c[3] & (REGISTERS - 1)];
            switch (c[0]) {
            case OP_LOAD: {
                const void *x = data[c[2]];
                if (kinds[c[2]] == KIND_F16)
                    widen_f16((const uint16_t *)x + start, (uint32_t *)rd, m);
                else if (kinds[c[2]] == KIND_BF16)
                    widen_bf16((const uint16_t *)x + start, (uint32_t *)rd, m);
                else
                    load_periodic(rd, (const float *)x, (size_t)periods[c[2]], start, m);
                break;
            }
            case OP_LOOKUP:
                lookup(rd, (const uint16_t *)data[c[2]] + start, tables[c[3]], m);
                break;
            case OP_ADD: BINARY(+); break;
            case OP_SUB: BINARY(-); break;
            case OP_MUL: BINARY(*); break;
            case OP_DIV: BINARY(/); break;
            case OP_NEG: PASS(-ra[j]); break;
            case OP_ABS: PASS(float_of(bits_of(ra[j]) & 0x7fffffffu)); break;
            default: return -1;
            }
        }
        if (out_kind == KIND_F16)
            narrow_f16((const uint32_t *)registers[result], (uint16_t *)out + start, m);
        else if (out_kind == KIND_BF16)
            narrow_bf16((const uint32_t *)registers[result], (uint16_t *)out + start, m);
        else  /* KIND_F32: a float32 term that NumPy code reduces, then rounds once */
            copy_floats((float *)out + start, registers[result], m);
    }
    return 0;
}
