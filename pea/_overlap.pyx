# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False, language_level=3
"""Compiled kernel of `pea.metrics`: the sparse overlap (contingency) table of two label images.

`pair_counts(a, b)` counts, for every pair of values found at the same position of two flat
label arrays, the positions they share. Cost O(voxels + distinct labels + pairs), GIL released,
one pass over the voxels after a min/max pass:

- dense: when (range of a) x (range of b) <= max(2**16, voxels), capped at 2**22 cells, the
  pairs are counted in a dense table indexed by the two values (CVPPP / BBBC039-sized label sets);
- sparse: otherwise, runs of equal (a, b) pairs along memory order are counted in a register and
  only a run's end touches the maps: each value to a compact id (a lookup table when the value
  range is <= max(2**20, voxels / 2), else an open-addressing hash map), and the packed
  (id_a, id_b) to its count (open-addressing hash map). 3D EM volumes have long runs, so this
  pass costs little more than reading the two arrays.
"""
import numpy as np

from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, realloc

ctypedef fused label_t:
    uint8_t
    uint16_t
    uint32_t
    uint64_t
    int8_t
    int16_t
    int32_t
    int64_t

DENSE_MAX_CELLS = 1 << 22
LUT_MIN = 1 << 20


cdef struct Entry:
    uint64_t key
    int64_t val


cdef struct HashMap:
    # linear probing over key/value entries (one cache line per probe); an entry is empty while
    # its value is 0 (stored values are always >= 1)
    Entry* slots
    size_t capacity
    size_t size


cdef inline uint64_t _mix(uint64_t x) noexcept nogil:
    # murmur3 64-bit finaliser: spreads packed / sequential keys over the table
    x ^= x >> 33
    x *= 0xFF51AFD7ED558CCDULL
    x ^= x >> 33
    x *= 0xC4CEB9FE1A85EC53ULL
    x ^= x >> 33
    return x


cdef int _map_init(HashMap* m, size_t capacity) noexcept nogil:
    m.capacity = capacity
    m.size = 0
    m.slots = <Entry*> calloc(capacity, sizeof(Entry))
    return 0 if m.slots != NULL else -1


cdef void _map_free(HashMap* m) noexcept nogil:
    free(m.slots)
    m.slots = NULL


cdef int _map_grow(HashMap* m) noexcept nogil:
    cdef HashMap bigger
    cdef size_t i, j, mask
    if _map_init(&bigger, 2 * m.capacity) != 0:
        return -1
    mask = bigger.capacity - 1
    for i in range(m.capacity):
        if m.slots[i].val != 0:
            j = _mix(m.slots[i].key) & mask
            while bigger.slots[j].val != 0:
                j = (j + 1) & mask
            bigger.slots[j] = m.slots[i]
    bigger.size = m.size
    _map_free(m)
    m[0] = bigger
    return 0


cdef int64_t* _map_slot(HashMap* m, uint64_t key) noexcept nogil:
    """The value of `key`, inserted with value 0 if new (the caller sets it); NULL if out of memory."""
    cdef size_t mask, j
    if 2 * (m.size + 1) > m.capacity:
        if _map_grow(m) != 0:
            return NULL
    mask = m.capacity - 1
    j = _mix(key) & mask
    while m.slots[j].val != 0:
        if m.slots[j].key == key:
            return &m.slots[j].val
        j = (j + 1) & mask
    m.slots[j].key = key
    m.size += 1
    return &m.slots[j].val


cdef struct Ids:
    # value -> compact id (0, 1, ... in order of first appearance), and the values in id order
    HashMap index      # used when lut is NULL
    uint32_t* lut      # value - base -> id + 1 (0: unseen), or NULL
    uint64_t base
    uint64_t* values
    size_t count
    size_t capacity


cdef int _ids_init(Ids* d, uint64_t base, size_t lut_size) noexcept nogil:
    d.count = 0
    d.capacity = 64
    d.base = base
    d.index.slots = NULL
    d.lut = NULL
    d.values = <uint64_t*> calloc(d.capacity, sizeof(uint64_t))
    if d.values == NULL:
        return -1
    if lut_size > 0:
        d.lut = <uint32_t*> calloc(lut_size, sizeof(uint32_t))
        return 0 if d.lut != NULL else -1
    return _map_init(&d.index, 128)


cdef void _ids_free(Ids* d) noexcept nogil:
    _map_free(&d.index)
    free(d.lut)
    free(d.values)
    d.lut = NULL
    d.values = NULL


cdef int64_t _id_of(Ids* d, uint64_t value) noexcept nogil:
    """Compact id of `value` (a new id if unseen); -1 if out of memory."""
    cdef int64_t* slot = NULL
    cdef uint32_t* cell = NULL
    cdef uint64_t* grown
    cdef int64_t new_id
    if d.lut != NULL:
        cell = &d.lut[value - d.base]
        if cell[0] != 0:
            return <int64_t> cell[0] - 1
    else:
        slot = _map_slot(&d.index, value)
        if slot == NULL:
            return -1
        if slot[0] != 0:
            return slot[0] - 1
    new_id = <int64_t> d.count
    if d.count == d.capacity:
        grown = <uint64_t*> realloc(d.values, 2 * d.capacity * sizeof(uint64_t))
        if grown == NULL:
            return -1
        d.values = grown
        d.capacity *= 2
    d.values[new_id] = value
    d.count += 1
    if cell != NULL:
        cell[0] = <uint32_t> (new_id + 1)
    else:
        slot[0] = new_id + 1
    return new_id


cdef int _add_run(Ids* ia, Ids* ib, HashMap* pairs, uint64_t va, uint64_t vb, int64_t run,
                  uint64_t* last_va, int64_t* last_ida, uint64_t* last_vb, int64_t* last_idb) noexcept nogil:
    cdef int64_t ida, idb
    cdef int64_t* slot
    if va == last_va[0] and last_ida[0] >= 0:
        ida = last_ida[0]
    else:
        ida = _id_of(ia, va)
        last_va[0] = va
        last_ida[0] = ida
    if vb == last_vb[0] and last_idb[0] >= 0:
        idb = last_idb[0]
    else:
        idb = _id_of(ib, vb)
        last_vb[0] = vb
        last_idb[0] = idb
    if ida < 0 or idb < 0:
        return -1
    slot = _map_slot(pairs, (<uint64_t> ida << 32) | <uint64_t> idb)
    if slot == NULL:
        return -1
    slot[0] += run
    return 0


cdef void _minmax(const label_t[::1] x, label_t* lo, label_t* hi) noexcept nogil:
    cdef Py_ssize_t i
    cdef label_t v, mn = x[0], mx = x[0]
    for i in range(1, x.shape[0]):
        v = x[i]
        if v < mn:
            mn = v
        if v > mx:
            mx = v
    lo[0] = mn
    hi[0] = mx


cdef void _count_dense(const label_t[::1] a, const label_t[::1] b, label_t amin, label_t bmin,
                       uint64_t rb, int64_t[::1] table) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(a.shape[0]):
        table[(<uint64_t> a[i] - <uint64_t> amin) * rb + (<uint64_t> b[i] - <uint64_t> bmin)] += 1


def _from_bits(bits, dtype):
    """uint64 bit patterns as `dtype` (two's complement for signed types)."""
    return np.asarray(bits, dtype=np.uint64).astype(dtype)


def _dense(const label_t[::1] a, const label_t[::1] b, label_t amin, label_t bmin, ra, rb, dtype):
    table = np.zeros(ra * rb, dtype=np.int64)
    cdef int64_t[::1] view = table
    cdef uint64_t cols = rb
    with nogil:
        _count_dense(a, b, amin, bmin, cols, view)
    rows, cols_ = np.divmod(np.flatnonzero(table), rb)
    counts = table[rows * rb + cols_]
    a_present, a_index = np.unique(rows, return_inverse=True)
    b_present, b_index = np.unique(cols_, return_inverse=True)
    a_values = _from_bits(a_present.astype(np.uint64) + np.uint64(<uint64_t> amin), dtype)
    b_values = _from_bits(b_present.astype(np.uint64) + np.uint64(<uint64_t> bmin), dtype)
    return a_values, b_values, a_index.astype(np.int64), b_index.astype(np.int64), counts


def _sparse(const label_t[::1] a, const label_t[::1] b, label_t amin, label_t bmin, size_t lut_a,
            size_t lut_b, dtype):
    cdef Py_ssize_t n = a.shape[0], i
    cdef Ids ia, ib
    cdef HashMap pairs
    cdef label_t pa, pb, va, vb
    cdef int64_t run = 1, last_ida = -1, last_idb = -1
    cdef uint64_t last_va = 0, last_vb = 0
    cdef int failed = 0
    ia.values = NULL
    ib.values = NULL
    ia.lut = NULL
    ib.lut = NULL
    ia.index.slots = NULL
    ib.index.slots = NULL
    pairs.slots = NULL
    with nogil:
        failed = (_ids_init(&ia, <uint64_t> amin, lut_a) | _ids_init(&ib, <uint64_t> bmin, lut_b)
                  | _map_init(&pairs, 256))
        if failed == 0:
            pa = a[0]
            pb = b[0]
            for i in range(1, n):
                va = a[i]
                vb = b[i]
                if va == pa and vb == pb:
                    run += 1
                else:
                    if _add_run(&ia, &ib, &pairs, <uint64_t> pa, <uint64_t> pb, run,
                                &last_va, &last_ida, &last_vb, &last_idb) != 0:
                        failed = 1
                        break
                    pa = va
                    pb = vb
                    run = 1
            if failed == 0:
                failed = _add_run(&ia, &ib, &pairs, <uint64_t> pa, <uint64_t> pb, run,
                                  &last_va, &last_ida, &last_vb, &last_idb)
    try:
        if failed != 0:
            raise MemoryError("pair_counts: out of memory building the overlap table")
        a_values = _from_bits(<uint64_t[:ia.count]> ia.values, dtype) if ia.count else np.empty(0, dtype)
        b_values = _from_bits(<uint64_t[:ib.count]> ib.values, dtype) if ib.count else np.empty(0, dtype)
        a_index = np.empty(pairs.size, dtype=np.int64)
        b_index = np.empty(pairs.size, dtype=np.int64)
        counts = np.empty(pairs.size, dtype=np.int64)
        _unpack(&pairs, a_index, b_index, counts)
        return a_values, b_values, a_index, b_index, counts
    finally:
        _ids_free(&ia)
        _ids_free(&ib)
        _map_free(&pairs)


cdef void _unpack(HashMap* pairs, int64_t[::1] a_index, int64_t[::1] b_index, int64_t[::1] counts) noexcept:
    cdef size_t k, m = 0
    with nogil:
        for k in range(pairs.capacity):
            if pairs.slots[k].val != 0:
                a_index[m] = <int64_t> (pairs.slots[k].key >> 32)
                b_index[m] = <int64_t> (pairs.slots[k].key & 0xFFFFFFFFULL)
                counts[m] = pairs.slots[k].val
                m += 1


def pair_counts(const label_t[::1] a, const label_t[::1] b):
    """Overlap table of two flat label arrays of the same length and dtype.

    Returns ``(a_values, b_values, a_index, b_index, counts)``: the distinct values of `a` and
    of `b` (dtype of the input, unsorted) and, for every pair of values that share at least one
    position, the index of each value in those arrays and the number of shared positions
    (int64 arrays, in no particular order).
    """
    cdef Py_ssize_t n = a.shape[0]
    cdef label_t amin, amax, bmin, bmax
    if b.shape[0] != n:
        raise ValueError(f"pair_counts: lengths differ ({n} and {b.shape[0]})")
    dtype = np.asarray(a).dtype
    if n == 0:
        empty = np.empty(0, dtype=np.int64)
        return np.empty(0, dtype), np.empty(0, dtype), empty, empty.copy(), empty.copy()
    with nogil:
        _minmax(a, &amin, &amax)
        _minmax(b, &bmin, &bmax)
    ra, rb = int(amax) - int(amin) + 1, int(bmax) - int(bmin) + 1
    if ra * rb <= min(max(1 << 16, n), DENSE_MAX_CELLS):
        return _dense(a, b, amin, bmin, ra, rb, dtype)
    lut_max = max(LUT_MIN, n // 2)
    return _sparse(a, b, amin, bmin, ra if ra <= lut_max else 0, rb if rb <= lut_max else 0, dtype)
