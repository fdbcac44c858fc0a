// One launch as the kernel library hands it to the runtime: included by cuda_emu.h
// (the kernel library) and runtime.cpp; gpuops/emu/__init__.py mirrors it in ctypes.
#pragma once

extern "C" {
struct gpuops_emu_launch_spec {
    int (*thread_entry)(void (*kernel)(void**), void** args, const unsigned* thread,
                        const unsigned* block);
    void (*kernel)(void**);
    void** args;
    unsigned grid[3], block[3];
    unsigned long long shared_mem;
    unsigned char* dynamic_shared;
    unsigned long long dynamic_capacity;
    unsigned char* static_shared_begin;
    unsigned char* static_shared_end;
    double watchdog_seconds;
    char* error;
    unsigned long long error_size;
};
}
