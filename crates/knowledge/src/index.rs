//! The in-process vector index of one knowledge base: every chunk's unit vector in one flat
//! array. A scan is bound by memory bandwidth (100k × 384 floats is 150 MB per query), so the
//! first pass reads an int8 copy (a quarter of the bytes, one scale per row) and keeps the
//! best few hundred; those are rescored exactly in f32. The inner products are written so the
//! compiler vectorises them (independent accumulators, no bounds checks in the loop).

use std::collections::HashMap;

use store::knowledge::VectorSet;

#[derive(Debug, Default)]
pub struct VectorIndex {
    dim: usize,
    ids: Vec<i64>,
    vectors: Vec<f32>,
    /// `vectors` quantised per row: `q8[i] * scales[row] ≈ vectors[i]`.
    q8: Vec<i8>,
    scales: Vec<f32>,
    rows: HashMap<i64, usize>,
}

/// Rows the int8 pass hands to the exact rescoring, at least (more when k is large).
const RESCORE: usize = 256;

fn quantise(row: &[f32], out: &mut Vec<i8>) -> f32 {
    let max = row.iter().fold(0f32, |m, x| m.max(x.abs()));
    let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
    out.extend(
        row.iter()
            .map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8),
    );
    scale
}

#[inline(always)]
fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    let mut acc = [0i32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += i32::from(x[i]) * i32::from(y[i]);
        }
    }
    let mut sum: i32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        sum += i32::from(*x) * i32::from(*y);
    }
    sum
}

/// `a · b` for equal-length slices.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        sum += x * y;
    }
    sum
}

/// Scales `v` to unit length (a zero vector stays zero).
pub fn normalise(v: &mut [f32]) {
    let norm = dot(v, v).sqrt();
    if norm > 0.0 {
        for x in v.iter_mut() {
            *x /= norm;
        }
    }
}

impl VectorIndex {
    pub fn from_set(set: VectorSet) -> VectorIndex {
        let mut vectors = set.vectors;
        if set.dim > 0 {
            for row in vectors.chunks_exact_mut(set.dim) {
                normalise(row);
            }
        }
        let rows = set.ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let mut q8 = Vec::with_capacity(vectors.len());
        let scales = if set.dim > 0 {
            vectors
                .chunks_exact(set.dim)
                .map(|row| quantise(row, &mut q8))
                .collect()
        } else {
            Vec::new()
        };
        VectorIndex {
            dim: set.dim,
            ids: set.ids,
            vectors,
            q8,
            scales,
            rows,
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Cosine similarity of `query` (unit length) with chunk `id`, if it is in the index.
    pub fn score(&self, query: &[f32], id: i64) -> Option<f32> {
        let row = *self.rows.get(&id)?;
        let v = self.vectors.get(row * self.dim..(row + 1) * self.dim)?;
        Some(dot(query, v))
    }

    /// The `k` chunks most similar to `query` (unit length), best first.
    pub fn search(&self, query: &[f32], k: usize) -> Vec<(i64, f32)> {
        if k == 0 || self.dim == 0 || query.len() != self.dim {
            return Vec::new();
        }
        // Pass 1: approximate scores from the int8 copy, keeping the best `deep` rows.
        let deep = RESCORE.max(k * 4);
        let mut qq = Vec::with_capacity(self.dim);
        let qscale = quantise(query, &mut qq);
        // Compiled for AVX-512 and AVX2 too and picked at run time: at SSE2, the build's
        // baseline, this pass is bound by instructions, not by memory.
        let candidates = pulp::Arch::new().dispatch(Scan {
            index: self,
            query: &qq,
            scale: qscale,
            keep: deep,
        });
        // Pass 2: exact f32 scores for those.
        let mut best: Vec<(f32, usize)> = candidates
            .into_iter()
            .map(|(_, row)| {
                let v = &self.vectors[row * self.dim..(row + 1) * self.dim];
                (dot(query, v), row)
            })
            .collect();
        best.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        best.truncate(k);
        best.into_iter()
            .map(|(s, row)| (self.ids[row], s))
            .collect()
    }
}

/// The int8 pass of [`VectorIndex::search`]: the `keep` rows whose approximate score with
/// `query` (quantised, `scale`) is highest. [`pulp`] compiles `with_simd` once per instruction
/// set, with everything it calls inlined, and runs the best the CPU has.
struct Scan<'a> {
    index: &'a VectorIndex,
    query: &'a [i8],
    scale: f32,
    keep: usize,
}

impl pulp::WithSimd for Scan<'_> {
    type Output = Vec<(f32, usize)>;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> Self::Output {
        let Scan {
            index,
            query,
            scale,
            keep,
        } = self;
        top(
            index
                .q8
                .chunks_exact(index.dim)
                .zip(&index.scales)
                .map(|(v, s)| dot_i8(query, v) as f32 * s * scale),
            keep,
        )
    }
}

/// The `k` best `(score, position)` of `scores`, best first. A small sorted buffer beats a
/// heap for the few hundred kept here.
#[inline(always)]
fn top(scores: impl Iterator<Item = f32>, k: usize) -> Vec<(f32, usize)> {
    let mut best: Vec<(f32, usize)> = Vec::with_capacity(k + 1);
    let mut floor = f32::NEG_INFINITY;
    for (row, s) in scores.enumerate() {
        if best.len() < k || s > floor {
            let at = best.partition_point(|(b, _)| *b >= s);
            best.insert(at, (s, row));
            if best.len() > k {
                best.pop();
            }
            if best.len() == k {
                floor = best[k - 1].0;
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set(rows: &[Vec<f32>]) -> VectorSet {
        VectorSet {
            version: 1,
            dim: rows.first().map_or(0, Vec::len),
            ids: (0..rows.len() as i64).map(|i| i * 10).collect(),
            vectors: rows.concat(),
        }
    }

    proptest! {
        #[test]
        fn search_returns_the_exact_top_k(
            rows in prop::collection::vec(prop::collection::vec(-1f32..1.0, 13), 1..60),
            q in prop::collection::vec(-1f32..1.0, 13),
            k in 1usize..10,
        ) {
            let index = VectorIndex::from_set(set(&rows));
            let mut q = q;
            normalise(&mut q);
            let got = index.search(&q, k);
            let mut all: Vec<(i64, f32)> = index.ids.iter().map(|id| (*id, index.score(&q, *id).unwrap_or(f32::NAN))).collect();
            all.sort_by(|a, b| b.1.total_cmp(&a.1));
            prop_assert_eq!(got.len(), k.min(rows.len()));
            for (g, w) in got.iter().zip(&all) {
                prop_assert!((g.1 - w.1).abs() < 1e-6, "{:?} vs {:?}", got, all);
            }
        }

        #[test]
        fn dot_matches_the_naive_sum(a in prop::collection::vec(-10f32..10.0, 0..70)) {
            let b: Vec<f32> = a.iter().map(|x| x * 0.5 - 1.0).collect();
            let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            prop_assert!((dot(&a, &b) - naive).abs() <= 1e-3 * (1.0 + naive.abs()));
        }
    }

    #[test]
    fn the_int8_pass_keeps_the_exact_top_k_on_a_large_index() {
        // 5,000 random rows (far more than the rescored candidates): the two-pass search
        // must return what an exact scan returns.
        let mut seed = 42u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let rows: Vec<Vec<f32>> = (0..5000)
            .map(|_| (0..64).map(|_| next()).collect())
            .collect();
        let index = VectorIndex::from_set(set(&rows));
        for _ in 0..20 {
            let mut q: Vec<f32> = (0..64).map(|_| next()).collect();
            normalise(&mut q);
            let got: Vec<i64> = index.search(&q, 10).into_iter().map(|(id, _)| id).collect();
            let mut all: Vec<(i64, f32)> = index
                .ids
                .iter()
                .map(|id| (*id, index.score(&q, *id).unwrap_or(f32::NAN)))
                .collect();
            all.sort_by(|a, b| b.1.total_cmp(&a.1));
            let want: Vec<i64> = all.iter().take(10).map(|(id, _)| *id).collect();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn a_query_of_the_wrong_dimension_finds_nothing() {
        let index = VectorIndex::from_set(set(&[vec![1.0, 0.0], vec![0.0, 1.0]]));
        assert!(index.search(&[1.0, 0.0, 0.0], 3).is_empty());
        assert_eq!(index.search(&[0.0, 1.0], 1), vec![(10, 1.0)]);
    }
}
