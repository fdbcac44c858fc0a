// Counting mode of the CPU emulator (build mode 'count', see build.py and counters.py):
// included after cuda_emu.h into a kernel library built with
//   g++ -fsanitize=thread --param=tsan-instrument-func-entry-exit=0 -Wl,--as-needed
// which turns every load and store of the compiled code into a call
// __tsan_{read,write}{1,2,4,8,16}(address) made from the accessing instruction, and
// every atomic into __tsan_atomic<bits>_<op>(...). (AddressSanitizer's instrumentation
// skips constant-offset accesses to statics, such as a __shared__ scalar; ThreadSanitizer's
// does not.) This header implements those calls, so ThreadSanitizer's runtime is never
// loaded: no checking, a record per access that falls in a launch's global buffers or in
// the block's shared memory (the section gpuops_shared and the dynamic buffer; locals, the
// kernel arguments' holders and the emulator's own globals are ignored), with the return address of the call (the instruction) and
// the emulated block and thread; the atomics perform their operation (sequentially
// consistent) and are recorded as atomics. Every function here is itself uninstrumented
// (no_sanitize_thread) and uses no library code that could be instrumented.
#pragma once

#include <dlfcn.h>

#define GPUOPS_EMU_COUNT_HOOK extern "C" __attribute__((visibility("hidden"), no_sanitize_thread))
#define GPUOPS_EMU_COUNT_API extern "C" __attribute__((visibility("default"), no_sanitize_thread))
#define GPUOPS_EMU_COUNT_MAX_RANGES 4096

extern "C" {
// One access, as handed to Python (counters.py mirrors it as a NumPy dtype).
struct gpuops_emu_count_record {
    unsigned long long addr;  // as accessed (shared) or offset into its range (global)
    unsigned long long pc;    // return address of the hook call, relative to the library
    unsigned block;           // linear block index
    unsigned thread;          // linear thread index in the block
    unsigned size;            // bytes
    unsigned flags;           // bit 0: store; 1: shared; 2: atomic; 8..: global range index
};
}

namespace gpuops_emu_count {

struct Buffer {  // one per OS worker thread; workers run one emulated thread at a time
    gpuops_emu_count_record* data;
    unsigned long long len, cap;
    bool overflow;
    Buffer* next;
};

static Buffer* buffers = nullptr;  // every worker's buffer (a list guarded by `lock`)
static int lock = 0;
static __thread Buffer* mine = nullptr;
static int enabled = 0;
static int nranges = 0;  // global ranges, sorted, disjoint
static unsigned long long range_begin[GPUOPS_EMU_COUNT_MAX_RANGES];
static unsigned long long range_end[GPUOPS_EMU_COUNT_MAX_RANGES];
// Shared memory: every __shared__ variable (the section gpuops_shared, build.py's linker
// script gathering those of template functions into it too) and the dynamic buffer.
static unsigned long long static_begin = 0, static_end = 0, dynamic_begin = 0, dynamic_end = 0;

__attribute__((no_sanitize_thread)) static bool in_shared(unsigned long long addr) {
    return (addr >= static_begin && addr < static_end) ||
           (addr >= dynamic_begin && addr < dynamic_end);
}

// The global range holding addr, or -1.
__attribute__((no_sanitize_thread)) static int global_range(unsigned long long addr) {
    int lo = 0, hi = nranges;  // the first range ending after addr
    while (lo < hi) {
        const int mid = (lo + hi) / 2;
        if (range_end[mid] <= addr) lo = mid + 1;
        else hi = mid;
    }
    return lo < nranges && addr >= range_begin[lo] ? lo : -1;
}

__attribute__((no_sanitize_thread)) static unsigned long long library_base() {
    Dl_info info;
    if (dladdr((void*)&in_shared, &info) && info.dli_fbase)
        return (unsigned long long)info.dli_fbase;
    return 0;
}
static unsigned long long limit = 0;  // records per worker at most (memory bound)

__attribute__((no_sanitize_thread)) static Buffer* buffer() {
    if (mine) return mine;
    Buffer* b = (Buffer*)std::calloc(1, sizeof(Buffer));
    while (__atomic_exchange_n(&lock, 1, __ATOMIC_ACQUIRE)) {}
    b->next = buffers;
    buffers = b;
    __atomic_store_n(&lock, 0, __ATOMIC_RELEASE);
    mine = b;
    return b;
}

__attribute__((no_sanitize_thread)) static void record(unsigned long long addr,
                                                        unsigned long long size, unsigned store,
                                                        void* pc) {
    if (!__atomic_load_n(&enabled, __ATOMIC_RELAXED)) return;
    unsigned flags = store;
    if (in_shared(addr)) {
        flags |= 2u;
    } else {
        const int r = global_range(addr);
        if (r < 0) return;  // a local, an argument holder, an emulator global
        flags |= (unsigned)r << 8;
        addr -= range_begin[r];
    }
    Buffer* b = buffer();
    if (b->len >= limit) {
        b->overflow = true;
        return;
    }
    if (b->len == b->cap) {
        const unsigned long long cap = b->cap ? 2 * b->cap : 4096;
        void* grown = std::realloc(b->data, cap * sizeof(gpuops_emu_count_record));
        if (!grown) {
            b->overflow = true;
            return;
        }
        b->data = (gpuops_emu_count_record*)grown;
        b->cap = cap;
    }
    gpuops_emu_count_record& out = b->data[b->len++];
    out.addr = addr;
    out.pc = (unsigned long long)pc;
    out.block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    out.thread = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    out.size = (unsigned)size;
    out.flags = flags;
}

}  // namespace gpuops_emu_count

#define GPUOPS_EMU_COUNT_PC __builtin_return_address(0)
#define GPUOPS_EMU_COUNT_SIZED(N)                                                           \
    GPUOPS_EMU_COUNT_HOOK void __tsan_read##N(void* a) {                                    \
        gpuops_emu_count::record((unsigned long long)a, N, 0, GPUOPS_EMU_COUNT_PC);         \
    }                                                                                       \
    GPUOPS_EMU_COUNT_HOOK void __tsan_write##N(void* a) {                                   \
        gpuops_emu_count::record((unsigned long long)a, N, 1, GPUOPS_EMU_COUNT_PC);         \
    }                                                                                       \
    GPUOPS_EMU_COUNT_HOOK void __tsan_unaligned_read##N(void* a) {                          \
        gpuops_emu_count::record((unsigned long long)a, N, 0, GPUOPS_EMU_COUNT_PC);         \
    }                                                                                       \
    GPUOPS_EMU_COUNT_HOOK void __tsan_unaligned_write##N(void* a) {                         \
        gpuops_emu_count::record((unsigned long long)a, N, 1, GPUOPS_EMU_COUNT_PC);         \
    }                                                                                       \
    GPUOPS_EMU_COUNT_HOOK void __tsan_volatile_read##N(void* a) {                           \
        gpuops_emu_count::record((unsigned long long)a, N, 0, GPUOPS_EMU_COUNT_PC);         \
    }                                                                                       \
    GPUOPS_EMU_COUNT_HOOK void __tsan_volatile_write##N(void* a) {                          \
        gpuops_emu_count::record((unsigned long long)a, N, 1, GPUOPS_EMU_COUNT_PC);         \
    }
GPUOPS_EMU_COUNT_SIZED(1)
GPUOPS_EMU_COUNT_SIZED(2)
GPUOPS_EMU_COUNT_SIZED(4)
GPUOPS_EMU_COUNT_SIZED(8)
GPUOPS_EMU_COUNT_SIZED(16)
GPUOPS_EMU_COUNT_HOOK void __tsan_read_range(void* a, unsigned long n) {
    gpuops_emu_count::record((unsigned long long)a, n, 0, GPUOPS_EMU_COUNT_PC);
}
GPUOPS_EMU_COUNT_HOOK void __tsan_write_range(void* a, unsigned long n) {
    gpuops_emu_count::record((unsigned long long)a, n, 1, GPUOPS_EMU_COUNT_PC);
}
GPUOPS_EMU_COUNT_HOOK void __tsan_init(void) {}
GPUOPS_EMU_COUNT_HOOK void __tsan_func_entry(void*) {}
GPUOPS_EMU_COUNT_HOOK void __tsan_func_exit(void) {}
GPUOPS_EMU_COUNT_HOOK void __tsan_vptr_update(void**, void*) {}
GPUOPS_EMU_COUNT_HOOK void __tsan_vptr_read(void**) {}
GPUOPS_EMU_COUNT_HOOK void __tsan_atomic_thread_fence(int) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
GPUOPS_EMU_COUNT_HOOK void __tsan_atomic_signal_fence(int) { __atomic_signal_fence(__ATOMIC_SEQ_CST); }

// Atomics: do the operation, record one atomic access (flags 4, and 1 when it may write).
#define GPUOPS_EMU_COUNT_ATOMIC_RMW(BITS, T, OP)                                             \
    GPUOPS_EMU_COUNT_HOOK T __tsan_atomic##BITS##_##OP(volatile T* a, T v, int) {            \
        gpuops_emu_count::record((unsigned long long)a, sizeof(T), 5, GPUOPS_EMU_COUNT_PC);  \
        return __atomic_##OP(a, v, __ATOMIC_SEQ_CST);                                        \
    }
#define GPUOPS_EMU_COUNT_ATOMICS(BITS, T)                                                    \
    GPUOPS_EMU_COUNT_HOOK T __tsan_atomic##BITS##_load(const volatile T* a, int) {           \
        gpuops_emu_count::record((unsigned long long)a, sizeof(T), 4, GPUOPS_EMU_COUNT_PC);  \
        return __atomic_load_n(a, __ATOMIC_SEQ_CST);                                         \
    }                                                                                        \
    GPUOPS_EMU_COUNT_HOOK void __tsan_atomic##BITS##_store(volatile T* a, T v, int) {        \
        gpuops_emu_count::record((unsigned long long)a, sizeof(T), 5, GPUOPS_EMU_COUNT_PC);  \
        __atomic_store_n(a, v, __ATOMIC_SEQ_CST);                                            \
    }                                                                                        \
    GPUOPS_EMU_COUNT_HOOK T __tsan_atomic##BITS##_exchange(volatile T* a, T v, int) {        \
        gpuops_emu_count::record((unsigned long long)a, sizeof(T), 5, GPUOPS_EMU_COUNT_PC);  \
        return __atomic_exchange_n(a, v, __ATOMIC_SEQ_CST);                                  \
    }                                                                                        \
    GPUOPS_EMU_COUNT_ATOMIC_RMW(BITS, T, fetch_add)                                          \
    GPUOPS_EMU_COUNT_ATOMIC_RMW(BITS, T, fetch_sub)                                          \
    GPUOPS_EMU_COUNT_ATOMIC_RMW(BITS, T, fetch_and)                                          \
    GPUOPS_EMU_COUNT_ATOMIC_RMW(BITS, T, fetch_or)                                           \
    GPUOPS_EMU_COUNT_ATOMIC_RMW(BITS, T, fetch_xor)                                          \
    GPUOPS_EMU_COUNT_ATOMIC_RMW(BITS, T, fetch_nand)                                         \
    GPUOPS_EMU_COUNT_HOOK int __tsan_atomic##BITS##_compare_exchange_strong(                 \
        volatile T* a, T* expected, T v, int, int) {                                         \
        gpuops_emu_count::record((unsigned long long)a, sizeof(T), 5, GPUOPS_EMU_COUNT_PC);  \
        return __atomic_compare_exchange_n(a, expected, v, false, __ATOMIC_SEQ_CST,          \
                                           __ATOMIC_SEQ_CST);                                \
    }                                                                                        \
    GPUOPS_EMU_COUNT_HOOK int __tsan_atomic##BITS##_compare_exchange_weak(                   \
        volatile T* a, T* expected, T v, int, int) {                                         \
        gpuops_emu_count::record((unsigned long long)a, sizeof(T), 5, GPUOPS_EMU_COUNT_PC);  \
        return __atomic_compare_exchange_n(a, expected, v, false, __ATOMIC_SEQ_CST,          \
                                           __ATOMIC_SEQ_CST);                                \
    }                                                                                        \
    GPUOPS_EMU_COUNT_HOOK T __tsan_atomic##BITS##_compare_exchange_val(                      \
        volatile T* a, T expected, T v, int, int) {                                          \
        gpuops_emu_count::record((unsigned long long)a, sizeof(T), 5, GPUOPS_EMU_COUNT_PC);  \
        __atomic_compare_exchange_n(a, &expected, v, false, __ATOMIC_SEQ_CST,                \
                                    __ATOMIC_SEQ_CST);                                       \
        return expected;                                                                     \
    }
GPUOPS_EMU_COUNT_ATOMICS(8, unsigned char)
GPUOPS_EMU_COUNT_ATOMICS(16, unsigned short)
GPUOPS_EMU_COUNT_ATOMICS(32, unsigned int)
GPUOPS_EMU_COUNT_ATOMICS(64, unsigned long long)

// Before a launch: the global ranges [begin, end) (pairs of addresses, sorted, disjoint),
// the dynamic shared bytes and the most records a worker may keep; clears every worker's
// records.
GPUOPS_EMU_COUNT_API int gpuops_emu_count_begin(const unsigned long long* ranges, int n,
                                                unsigned long long shared_mem,
                                                unsigned long long max_records) {
    using namespace gpuops_emu_count;
    if (n < 0 || n > GPUOPS_EMU_COUNT_MAX_RANGES) return 1;
    nranges = n;
    for (int r = 0; r < n; ++r) range_begin[r] = ranges[2 * r], range_end[r] = ranges[2 * r + 1];
    static_begin = (unsigned long long)__start_gpuops_shared;
    static_end = (unsigned long long)__stop_gpuops_shared;
    dynamic_begin = (unsigned long long)gpuops_emu_dynamic_shared;
    dynamic_end = dynamic_begin + shared_mem;
    limit = max_records;
    for (Buffer* b = buffers; b; b = b->next) b->len = 0, b->overflow = false;
    __atomic_store_n(&enabled, 1, __ATOMIC_SEQ_CST);
    return 0;
}

// After a launch: stops recording; the number of records (-1: a worker hit the limit).
GPUOPS_EMU_COUNT_API long long gpuops_emu_count_end(void) {
    using namespace gpuops_emu_count;
    __atomic_store_n(&enabled, 0, __ATOMIC_SEQ_CST);
    long long total = 0;
    for (Buffer* b = buffers; b; b = b->next) {
        if (b->overflow) return -1;
        total += (long long)b->len;
    }
    return total;
}

// Copies the records (each worker's in program order) with pc relative to this library.
GPUOPS_EMU_COUNT_API void gpuops_emu_count_copy(gpuops_emu_count_record* out) {
    using namespace gpuops_emu_count;
    const unsigned long long base = library_base();
    for (Buffer* b = buffers; b; b = b->next)
        for (unsigned long long i = 0; i < b->len; ++i) {
            *out = b->data[i];
            out->pc -= base;
            ++out;
        }
}

// An access the emulator makes for the kernel (cuda_emu.h: ldmatrix's rows, cp.async's
// global load and shared store), recorded from the calling instruction.
GPUOPS_EMU_COUNT_HOOK __attribute__((noinline)) void gpuops_emu_count_access(
    const void* addr, unsigned size, unsigned store) {
    gpuops_emu_count::record((unsigned long long)addr, size, store, GPUOPS_EMU_COUNT_PC);
}
