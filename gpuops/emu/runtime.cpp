// gpuops CPU emulator runtime: runs the blocks of a launch one after another, each
// block on one OS thread per CUDA thread (a persistent worker pool), and implements
// the block barrier, the per-warp exchange used by shuffles and votes, and a
// watchdog. Loaded once per process (RTLD_GLOBAL) before the kernel libraries
// built from cuda_emu.h; one launch runs at a time.
//
// Barriers sleep on a futex (as std::atomic::wait does). A thread that returns from the
// kernel leaves every barrier (the others no longer wait for it). Errors — a
// divergent barrier, a shuffle reading an exited lane, a bounds check, a deadlock —
// abort the block: every waiting thread wakes and leaves the kernel, and the launch
// returns the first error's message.
#include <linux/futex.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "launch_spec.h"

namespace {

// Sleep while `word` holds `value` / wake every sleeper (the futex under std::atomic::wait,
// without libstdc++'s spin-and-yield phase, which costs more than it saves when a block
// has far more threads than the machine has cores).
void futex_wait(std::atomic<unsigned>& word, unsigned value) {
    syscall(SYS_futex, reinterpret_cast<unsigned*>(&word), FUTEX_WAIT_PRIVATE, value, nullptr,
            nullptr, 0);
}
void futex_wake(std::atomic<unsigned>& word, int count) {
    syscall(SYS_futex, reinterpret_cast<unsigned*>(&word), FUTEX_WAKE_PRIVATE, count, nullptr,
            nullptr, 0);
}
static_assert(sizeof(std::atomic<unsigned>) == sizeof(unsigned));

enum WarpOp { SHFL_IDX, SHFL_UP, SHFL_DOWN, SHFL_XOR, BALLOT, SYNCWARP, ACTIVEMASK };
enum ThreadState { RUNNING, AT_BARRIER, AT_WARP_OP, EXITED };

struct Site {
    const char* file = "";
    const char* func = "";
    unsigned line = 0, column = 0;
};

bool same_site(const Site& a, const Site& b) {
    return a.line == b.line && a.column == b.column && std::strcmp(a.func, b.func) == 0 &&
           std::strcmp(a.file, b.file) == 0;
}

std::string describe(const Site& s) {
    char text[1024];
    std::snprintf(text, sizeof text, "%s:%u:%u (in %s)", s.file, s.line, s.column, s.func);
    return text;
}

// Where a thread is, for deadlock reports (relaxed atomics: read by the launcher).
struct ThreadSlot {
    std::atomic<int> state{RUNNING};
    std::atomic<const char*> file{""}, func{""};
    std::atomic<unsigned> line{0};
};

// A generation barrier for `expected` threads; `site` is where its first arriver of
// the current generation called it from. count[] carries __syncthreads_count.
struct Barrier {
    std::mutex m;
    int expected = 0;
    int arrived = 0;
    Site site;
    int first = -1;
    int count[2] = {0, 0};
    std::atomic<unsigned> gen{0};
};

struct Warp {
    Barrier bar;
    int size = 0;
    std::atomic<unsigned> live_mask{0};
    unsigned long long slot[2][32] = {};
    long long stamp[2][32] = {};  // which warp operation (per-lane sequence number) wrote
};

struct Block {
    int n = 0;
    unsigned dim[3] = {1, 1, 1};
    unsigned idx[3] = {0, 0, 0};
    Barrier bar;
    std::unique_ptr<Warp[]> warps;
    std::unique_ptr<ThreadSlot[]> threads;
    std::atomic<bool> abort{false};
    std::mutex error_m;
    std::string error;
    std::atomic<unsigned long long> progress{0};
    std::atomic<int> blocked{0};  // threads waiting for a barrier not yet released
    std::atomic<int> exited{0};

    Block(int threads_, const unsigned* block_dim, const unsigned* block_idx) : n(threads_) {
        for (int i = 0; i < 3; ++i) dim[i] = block_dim[i], idx[i] = block_idx[i];
        bar.expected = n;
        const int nwarps = (n + 31) / 32;
        warps.reset(new Warp[nwarps]);
        for (int w = 0; w < nwarps; ++w) {
            Warp& warp = warps[w];
            warp.size = n - 32 * w < 32 ? n - 32 * w : 32;
            warp.bar.expected = warp.size;
            warp.live_mask = warp.size == 32 ? 0xffffffffu : (1u << warp.size) - 1u;
            for (int p = 0; p < 2; ++p)
                for (int l = 0; l < 32; ++l) warp.stamp[p][l] = -1;
        }
        threads.reset(new ThreadSlot[n]);
    }

    std::string thread_name(int tid) const {
        char text[64];
        std::snprintf(text, sizeof text, "thread (%u,%u,%u)", tid % dim[0],
                      (tid / dim[0]) % dim[1], tid / (dim[0] * dim[1]));
        return text;
    }

    void wake(Barrier& b) {
        std::lock_guard<std::mutex> lock(b.m);  // see arrive(): abort is checked under it
        b.gen.fetch_add(1, std::memory_order_release);
        futex_wake(b.gen, INT_MAX);
    }

    // Record the first error and make every thread leave the kernel.
    void fail(const std::string& message) {
        {
            std::lock_guard<std::mutex> lock(error_m);
            if (error.empty()) error = message;
        }
        abort.store(true);
        wake(bar);
        for (int w = 0; w < (n + 31) / 32; ++w) wake(warps[w].bar);
    }

    // With b.m held, once every expected thread arrived; `waiters` of them sleep.
    void release(Barrier& b, int waiters) {
        blocked.fetch_sub(waiters);
        b.arrived = 0;
        b.gen.fetch_add(1, std::memory_order_release);
        futex_wake(b.gen, INT_MAX);
        progress.fetch_add(1);
    }

    // Wait at `b` until every live member arrived. Returns nonzero when the block is
    // aborted (the caller leaves the kernel). `what` names the primitive for errors.
    int arrive(Barrier& b, int tid, const Site& site, const char* what, int state,
               int predicate = 0, int* count = nullptr) {
        std::unique_lock<std::mutex> lock(b.m);
        if (abort.load()) return 1;
        const unsigned g = b.gen.load(std::memory_order_relaxed);
        const int parity = g & 1;
        if (b.arrived == 0) {
            b.site = site;
            b.first = tid;
            b.count[parity] = 0;
        } else if (!same_site(site, b.site)) {
            const std::string message =
                std::string("divergent ") + what + ": " + thread_name(tid) + " reached " +
                describe(site) + " while " + thread_name(b.first) + " waits at " +
                describe(b.site) + " (threads of one block must reach the same " + what + ")";
            lock.unlock();
            fail(message);
            return 1;
        }
        b.count[parity] += predicate;
        if (++b.arrived == b.expected) {
            if (count) *count = b.count[parity];
            release(b, b.arrived - 1);
            return 0;
        }
        ThreadSlot& me = threads[tid];
        me.file.store(site.file, std::memory_order_relaxed);
        me.func.store(site.func, std::memory_order_relaxed);
        me.line.store(site.line, std::memory_order_relaxed);
        me.state.store(state, std::memory_order_relaxed);
        blocked.fetch_add(1);
        lock.unlock();
        while (b.gen.load(std::memory_order_acquire) == g) futex_wait(b.gen, g);
        me.state.store(RUNNING, std::memory_order_relaxed);
        if (abort.load()) return 1;
        if (count) *count = b.count[parity];
        return 0;
    }

    void leave(Barrier& b) {
        std::lock_guard<std::mutex> lock(b.m);
        --b.expected;
        if (b.arrived > 0 && b.arrived == b.expected) release(b, b.arrived);
    }

    // A thread returned from the kernel (or left it on an error).
    void exit_thread(int tid) {
        Warp& w = warps[tid / 32];
        w.live_mask.fetch_and(~(1u << (tid % 32)));
        leave(w.bar);
        leave(bar);
        threads[tid].state.store(EXITED, std::memory_order_relaxed);
        exited.fetch_add(1);
        progress.fetch_add(1);
    }

    std::string states() const {  // "3 at file:line (in f), 1 running, 4 exited"
        std::vector<std::pair<std::string, int>> groups;
        for (int t = 0; t < n; ++t) {
            const int s = threads[t].state.load(std::memory_order_relaxed);
            std::string key = s == RUNNING ? "running" : s == EXITED ? "exited" :
                std::string(s == AT_BARRIER ? "at __syncthreads " : "at a warp operation ") +
                threads[t].file.load(std::memory_order_relaxed) + ":" +
                std::to_string(threads[t].line.load(std::memory_order_relaxed)) + " (in " +
                threads[t].func.load(std::memory_order_relaxed) + ")";
            bool found = false;
            for (auto& g : groups)
                if (g.first == key) ++g.second, found = true;
            if (!found) groups.emplace_back(key, 1);
        }
        std::string text;
        for (auto& g : groups) text += (text.empty() ? "" : "; ") + std::to_string(g.second) + " " + g.first;
        return text;
    }
};

thread_local Block* t_block = nullptr;
thread_local int t_tid = 0;
thread_local long long t_sequence = 0;  // warp operations done by this thread in this block

// ---- worker pool --------------------------------------------------------------------
struct Worker {
    pthread_t thread;
    int index = 0;
    std::atomic<unsigned> go{0};
};

struct Pool {
    std::mutex launch_m;  // one launch at a time
    std::vector<Worker*> workers;  // never freed: threads live as long as the process
    gpuops_emu_launch_spec* spec = nullptr;
    Block* block = nullptr;
    std::atomic<int> done{0};
    bool broken = false;  // a kernel never returned; its threads still run
};
Pool& pool() {
    static Pool* p = new Pool;  // leaked on purpose: workers may outlive static destructors
    return *p;
}

void start(Pool& p, int i) {
    p.workers[i]->go.fetch_add(1, std::memory_order_release);
    futex_wake(p.workers[i]->go, 1);
}

void run_thread(int i) {
    Pool& p = pool();
    Block* b = p.block;
    gpuops_emu_launch_spec* spec = p.spec;
    t_block = b;
    t_tid = i;
    t_sequence = 0;
    const unsigned thread[3] = {i % b->dim[0], (i / b->dim[0]) % b->dim[1],
                                i / (b->dim[0] * b->dim[1])};
    spec->thread_entry(spec->kernel, spec->args, thread, b->idx);
    b->exit_thread(i);
    t_block = nullptr;
    const int n = b->n;  // the block may be freed as soon as `done` reaches n
    if (p.done.fetch_add(1, std::memory_order_acq_rel) + 1 == n) {
        syscall(SYS_futex, reinterpret_cast<int*>(&p.done), FUTEX_WAKE_PRIVATE, INT_MAX,
                nullptr, nullptr, 0);
    }
}

void* worker_main(void* arg) {
    Worker* w = static_cast<Worker*>(arg);
    unsigned seen = 0;
    for (;;) {
        while (w->go.load(std::memory_order_acquire) == seen) futex_wait(w->go, seen);
        seen = w->go.load(std::memory_order_acquire);
        run_thread(w->index);
    }
    return nullptr;
}

bool grow_pool(int n, std::string& error) {
    Pool& p = pool();
    while ((int)p.workers.size() < n) {
        Worker* w = new Worker;
        w->index = (int)p.workers.size();
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 4u << 20);
        const int rc = pthread_create(&w->thread, &attr, worker_main, w);
        pthread_attr_destroy(&attr);
        if (rc != 0) {
            delete w;
            error = "cannot start emulator thread " + std::to_string(p.workers.size()) + ": " +
                    std::strerror(rc);
            return false;
        }
        p.workers.push_back(w);
    }
    return true;
}

double seconds_since(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// Run one block; returns 0, 1 (the block failed: b.error) or 2 (threads never returned).
int run_block(gpuops_emu_launch_spec* spec, Block& b) {
    Pool& p = pool();
    p.block = &b;
    p.spec = spec;
    p.done.store(0, std::memory_order_release);
    for (int i = 0; i < b.n; ++i) start(p, i);
    unsigned long long last_progress = b.progress.load();
    auto last_change = std::chrono::steady_clock::now();
    bool deadlocked = false;
    for (;;) {
        const int done = p.done.load(std::memory_order_acquire);
        if (done == b.n) return b.abort.load() ? 1 : 0;
        const timespec timeout = {0, 20 * 1000 * 1000};
        syscall(SYS_futex, reinterpret_cast<int*>(&p.done), FUTEX_WAIT_PRIVATE, done, &timeout,
                nullptr, 0);
        const unsigned long long progress = b.progress.load();
        if (progress != last_progress) {
            last_progress = progress;
            last_change = std::chrono::steady_clock::now();
            continue;
        }
        const double idle = seconds_since(last_change);
        const int live = b.n - b.exited.load();
        if (!b.abort.load()) {
            if (live > 0 && b.blocked.load() == live && idle > 0.1) {
                deadlocked = true;
                b.fail("deadlock: every thread still in the kernel waits for others that "
                       "will never arrive: " + b.states());
            } else if (idle > spec->watchdog_seconds) {
                char text[128];
                std::snprintf(text, sizeof text, "watchdog: no progress for %.1f s: ",
                              spec->watchdog_seconds);
                b.fail(text + b.states());
            }
            if (b.abort.load()) last_change = std::chrono::steady_clock::now();
        } else if (idle > spec->watchdog_seconds + (deadlocked ? 1.0 : 0.0)) {
            // Aborted, yet threads neither exit nor reach a barrier or atomic.
            std::lock_guard<std::mutex> lock(b.error_m);
            b.error += "; the kernel's threads did not stop (" + b.states() +
                       "): the emulator is unusable in this process";
            return 2;
        }
    }
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) int gpuops_emu_rt_launch(gpuops_emu_launch_spec* spec) {
    Pool& p = pool();
    std::lock_guard<std::mutex> lock(p.launch_m);
    auto report = [spec](const std::string& message) {
        std::snprintf(spec->error, spec->error_size, "%s", message.c_str());
        return 1;
    };
    if (p.broken) return report("an earlier kernel never returned; the emulator is unusable in this process");
    const unsigned long long threads =
        (unsigned long long)spec->block[0] * spec->block[1] * spec->block[2];
    if (threads == 0 || threads > 1024)
        return report("block of " + std::to_string(threads) + " threads; CUDA allows 1 to 1024");
    if (spec->shared_mem > spec->dynamic_capacity)
        return report("dynamic shared memory of " + std::to_string(spec->shared_mem) +
                      " bytes exceeds " + std::to_string(spec->dynamic_capacity));
    std::string error;
    if (!grow_pool((int)threads, error)) return report(error);
    const size_t static_bytes = spec->static_shared_end - spec->static_shared_begin;
    for (unsigned z = 0; z < spec->grid[2]; ++z)
        for (unsigned y = 0; y < spec->grid[1]; ++y)
            for (unsigned x = 0; x < spec->grid[0]; ++x) {
                // uninitialized shared memory reads as NaN (0xFF bytes) in every block
                if (static_bytes) std::memset(spec->static_shared_begin, 0xff, static_bytes);
                std::memset(spec->dynamic_shared, 0xff, spec->shared_mem);
                const unsigned idx[3] = {x, y, z};
                auto block = std::make_unique<Block>((int)threads, spec->block, idx);
                const int status = run_block(spec, *block);
                if (status != 0) {
                    char where[64];
                    std::snprintf(where, sizeof where, "block (%u,%u,%u): ", x, y, z);
                    report(where + block->error);
                    if (status == 2) {
                        p.broken = true;
                        block.release();  // still used by the runaway threads
                    }
                    return status;
                }
            }
    return 0;
}

__attribute__((visibility("default"))) int gpuops_emu_rt_syncthreads(
    const char* file, const char* func, unsigned line, unsigned column, int predicate,
    int* reduced) {
    Block* b = t_block;
    const Site site{file, func, line, column};
    return b->arrive(b->bar, t_tid, site, "__syncthreads", AT_BARRIER, predicate, reduced);
}

__attribute__((visibility("default"))) int gpuops_emu_rt_warp(
    int op, unsigned mask, unsigned long long* value, int arg, int width, const char* file,
    const char* func, unsigned line, unsigned column) {
    Block* b = t_block;
    const int tid = t_tid, lane = tid % 32;
    Warp& w = b->warps[tid / 32];
    const Site site{file, func, line, column};
    if (op == ACTIVEMASK) {
        *value = w.live_mask.load();
        return 0;
    }
    if (width < 1 || width > 32 || (width & (width - 1))) {
        b->fail("warp shuffle width " + std::to_string(width) + " at " + describe(site) +
                " is not a power of 2 in [1, 32]");
        return 1;
    }
    const unsigned live = w.live_mask.load();
    if ((mask & live) != live) {
        char text[160];
        std::snprintf(text, sizeof text,
                      "warp operation with mask 0x%08x while lanes 0x%08x of the warp are live "
                      "(the emulator supports full-warp masks only) at ", mask, live);
        b->fail(text + describe(site));
        return 1;
    }
    const long long seq = ++t_sequence;
    const int parity = seq & 1;
    w.slot[parity][lane] = *value;
    w.stamp[parity][lane] = seq;
    if (b->arrive(w.bar, tid, site, "warp operation", AT_WARP_OP)) return 1;
    if (op == SYNCWARP) return 0;
    if (op == BALLOT) {
        unsigned ballot = 0;
        for (int l = 0; l < w.size; ++l)
            if (w.stamp[parity][l] == seq && w.slot[parity][l]) ballot |= 1u << l;
        *value = ballot;
        return 0;
    }
    const int group = lane & ~(width - 1);  // first lane of this lane's width-segment
    int src = lane;
    switch (op) {
        case SHFL_IDX: src = group + (arg & (width - 1)); break;
        case SHFL_UP: src = lane - group >= arg ? lane - arg : lane; break;
        case SHFL_DOWN: src = lane - group + arg < width ? lane + arg : lane; break;
        case SHFL_XOR: src = lane ^ arg; if (src >= group + width) src = lane; break;
        default: break;
    }
    if (src != lane) {
        if (src < 0 || src >= w.size || w.stamp[parity][src] != seq) {
            b->fail("warp shuffle at " + describe(site) + ": " + b->thread_name(tid) +
                    " reads lane " + std::to_string(src) + (src < w.size ?
                    ", which has exited (or skipped this shuffle)" : ", which is not in the block"));
            return 1;
        }
        *value = w.slot[parity][src];
    }
    return 0;
}

__attribute__((visibility("default"))) int gpuops_emu_rt_aborted(void) {
    return t_block != nullptr && t_block->abort.load(std::memory_order_relaxed);
}

__attribute__((visibility("default"))) void gpuops_emu_rt_fail(const char* message) {
    t_block->fail(t_block->thread_name(t_tid) + ": " + message);
}

}  // extern "C"
