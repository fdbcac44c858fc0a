// Empty stand-in for <cuda.h> in the gpuops CPU emulator: cuda_emu.h defines what the
// emulator supports (for example __half); GPU-only code belongs under #ifndef GPUOPS_EMU.
#pragma once
