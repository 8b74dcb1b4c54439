// Multi-tensor optimizer steps for gpulayers (CupyOps): every variable of an
// optimizer step updated in place by one launch.
//
// The variables come through an MtTable passed by value (kernel parameter
// space, at most MT_MAX_TENSORS per launch; the host launches again for more):
// ptr[s][t] is the address of slot s of tensor t, all of size[t] elements of
// type T, C-contiguous. Slot 0 is the variable, slot 1 its gradient, slots 2..
// the rule's state in the order its kernel names them. The work is cut into
// chunks of `chunk` elements; tensor t owns chunks [chunk_start[t],
// chunk_start[t + 1]). Each block walks chunks blockIdx.x, + gridDim.x, ...
// (any grid size), its threads striding over the chunk's elements (any block
// size), so no two threads touch one element and the result does not depend
// on the launch shape.
//
// Each expression rounds as gpulayers/optimizers/algorithms.py's
// _update_step does in T (the host passes every constant already rounded to
// T, e.g. T(1 - beta_1)). Weight decay, for the tensors whose bit is set in
// decay_mask, comes first: w = w - w * wd * lr.

#define MT_MAX_TENSORS 32
#define MT_SLOTS 5

struct MtTable {
    unsigned long long ptr[MT_SLOTS][MT_MAX_TENSORS];
    long long size[MT_MAX_TENSORS];
    long long chunk_start[MT_MAX_TENSORS + 1];
    unsigned int decay_mask;
    int count;
};

__device__ inline float mt_sqrt(float v) { return sqrtf(v); }
__device__ inline double mt_sqrt(double v) { return sqrt(v); }

// Calls update(t, i, w) for every element i of every tensor t, w already decayed.
template <typename T, typename Update>
__device__ inline void mt_for_each(const MtTable& tab, int chunk, T lr, T wd, Update update)
{
    const long long chunks = tab.chunk_start[tab.count];
    int t = 0;
    for (long long c = blockIdx.x; c < chunks; c += gridDim.x) {
        while (c >= tab.chunk_start[t + 1]) ++t;  // c only grows: t never moves back
        T* w = reinterpret_cast<T*>(tab.ptr[0][t]);
        const bool decay = (tab.decay_mask >> t) & 1u;
        const long long lo = (c - tab.chunk_start[t]) * chunk;
        const long long hi = lo + chunk < tab.size[t] ? lo + chunk : tab.size[t];
        for (long long i = lo + threadIdx.x; i < hi; i += blockDim.x) {
            T wi = w[i];
            if (decay) wi = wi - wi * wd * lr;
            w[i] = update(t, i, wi);
        }
    }
}

template <typename T>
__device__ inline T* mt_slot(const MtTable& tab, int s, int t)
{
    return reinterpret_cast<T*>(tab.ptr[s][t]);
}

// SGD. Slot 2: momentum (when use_momentum).
//   w - g * lr;  m = m * momentum - g * lr;  w + m  or  w + (m * momentum - g * lr).
template <typename T>
__global__ void mt_sgd(struct MtTable tab, int chunk, T lr, T wd, T momentum, int use_momentum, int nesterov)
{
    mt_for_each<T>(tab, chunk, lr, wd, [&](int t, long long i, T w) {
        const T g = mt_slot<T>(tab, 1, t)[i];
        if (!use_momentum) return w - g * lr;
        T* mp = mt_slot<T>(tab, 2, t);
        const T m = mp[i] * momentum - g * lr;
        mp[i] = m;
        return nesterov ? w + (m * momentum - g * lr) : w + m;
    });
}

// Adam (and AdamW: the decay above). Slots 2, 3, 4: momentum, velocity, velocity_hat (amsgrad).
//   m += (g - m) * (1 - beta_1);  v += (g * g - v) * (1 - beta_2);  v_hat = max(v_hat, v)
//   w - (m * alpha) / (sqrt(v or v_hat) + epsilon)
template <typename T>
__global__ void mt_adam(struct MtTable tab, int chunk, T lr, T wd, T alpha, T one_minus_beta_1,
                        T one_minus_beta_2, T epsilon, int amsgrad)
{
    mt_for_each<T>(tab, chunk, lr, wd, [&](int t, long long i, T w) {
        const T g = mt_slot<T>(tab, 1, t)[i];
        T* mp = mt_slot<T>(tab, 2, t);
        T* vp = mt_slot<T>(tab, 3, t);
        T m = mp[i], v = vp[i];
        m = m + (g - m) * one_minus_beta_1;
        v = v + (g * g - v) * one_minus_beta_2;
        mp[i] = m;
        vp[i] = v;
        if (amsgrad) {
            T* hp = mt_slot<T>(tab, 4, t);
            const T h = hp[i];
            v = h > v || h != h ? h : v;  // max, NaN-propagating as numpy's maximum
            hp[i] = v;
        }
        return w - (m * alpha) / (mt_sqrt(v) + epsilon);
    });
}

// RMSprop. Slots 2, 3, 4: velocity, momentum (when use_momentum), average_gradient (centered).
//   v = v * rho + (1 - rho) * (g * g);  a = a * rho + (1 - rho) * g
//   step = (lr * g) / sqrt(v - a * a + epsilon  or  v + epsilon)
//   mom = mom * momentum + step; w - mom   or   w - step
template <typename T>
__global__ void mt_rmsprop(struct MtTable tab, int chunk, T lr, T wd, T rho, T one_minus_rho, T epsilon,
                           T momentum, int use_momentum, int centered)
{
    mt_for_each<T>(tab, chunk, lr, wd, [&](int t, long long i, T w) {
        const T g = mt_slot<T>(tab, 1, t)[i];
        T* vp = mt_slot<T>(tab, 2, t);
        const T v = vp[i] * rho + one_minus_rho * (g * g);
        vp[i] = v;
        T denominator;
        if (centered) {
            T* ap = mt_slot<T>(tab, 4, t);
            const T a = ap[i] * rho + one_minus_rho * g;
            ap[i] = a;
            denominator = v - a * a + epsilon;
        } else {
            denominator = v + epsilon;
        }
        const T step = (lr * g) / mt_sqrt(denominator);
        if (!use_momentum) return w - step;
        T* mp = mt_slot<T>(tab, 3, t);
        const T mom = mp[i] * momentum + step;
        mp[i] = mom;
        return w - mom;
    });
}

// Adagrad. Slot 2: accumulator.  acc += g * g;  w - (lr * g) / sqrt(acc + epsilon)
template <typename T>
__global__ void mt_adagrad(struct MtTable tab, int chunk, T lr, T wd, T epsilon)
{
    mt_for_each<T>(tab, chunk, lr, wd, [&](int t, long long i, T w) {
        const T g = mt_slot<T>(tab, 1, t)[i];
        T* ap = mt_slot<T>(tab, 2, t);
        const T acc = ap[i] + g * g;
        ap[i] = acc;
        return w - (lr * g) / mt_sqrt(acc + epsilon);
    });
}
