// Philox-4x32-10, the counter-based generator of Salmon, Moraes, Dror and Shaw,
// "Parallel random numbers: as easy as 1, 2, 3" (SC 2011), as in Random123: ten
// rounds of two 32x32->64-bit multiplications, the 64-bit key bumped by the Weyl
// constants between rounds. Counter (c0..c3) and key (k0, k1) in, four independent
// uniform 32-bit words out (in c0..c3). gpuops/dropout.py has the same function in
// NumPy; tests/test_dropout.py checks both against Random123's known answers.
__device__ __forceinline__ void philox4x32_10(unsigned int& c0, unsigned int& c1,
                                              unsigned int& c2, unsigned int& c3,
                                              unsigned int k0, unsigned int k1) {
#pragma unroll
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        const unsigned long long p0 = 0xD2511F53ull * c0;
        const unsigned long long p1 = 0xCD9E8D57ull * c2;
        const unsigned int n0 = (unsigned int)(p1 >> 32) ^ c1 ^ k0;
        const unsigned int n2 = (unsigned int)(p0 >> 32) ^ c3 ^ k1;
        c1 = (unsigned int)p1;
        c3 = (unsigned int)p0;
        c0 = n0;
        c2 = n2;
    }
}
