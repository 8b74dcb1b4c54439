// Device helpers shared by every kernel file. backends/cuda_sources.py puts
// this text in front of each .cu file's source (no #include: NVRTC, the
// compile check and the host emulator all get one self-contained source).

// A non-negative 64-bit index divided by a positive int, remainder in rem,
// with a 32-bit fast path (64-bit division is a long software routine on the GPU).
__device__ inline long long index_divmod(long long a, int b, int& rem)
{
    if ((unsigned long long)a <= 0xffffffffull) {
        const unsigned int q = (unsigned int)a / (unsigned int)b;
        rem = (int)((unsigned int)a - q * (unsigned int)b);
        return (long long)q;
    }
    const long long q = a / b;
    rem = (int)(a - q * b);
    return q;
}
