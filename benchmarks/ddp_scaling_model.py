"""Predicted data-parallel efficiency: T(N) = T_c + exposed(N) + T_flat."""
cases = {
  # name: (grad bytes fp32, T_compute ms on one H200 (assumed), backward share, buckets at 25 MB)
  "mlp (digits, 85 K params, batch 32)": (340_008, 0.20, 0.6, 1),
  "gpt default (2x64, 121 K params, batch 16x64)": (482_304, 1.2, 0.65, 1),
  "gpt 12x768 (86 M params, 8x1024 tok/GPU) @100 TFLOP/s": (344_156_160, 52.0, 2/3, 14),
  "gpt 12x768 (86 M params, 8x1024 tok/GPU) @400 TFLOP/s": (344_156_160, 13.0, 2/3, 14),
}
links = {"NVLink 4 (450 GB/s, 3 us/hop)": (450e9, 3e-6), "PCIe Gen5 (40 GB/s, 8 us/hop)": (40e9, 8e-6)}
HBM = 4.8e12 * 0.8  # flatten copy + mean pass over the gradients: read+write each
for name, (nbytes, tc_ms, bw_share, k) in cases.items():
    print(name)
    tc = tc_ms / 1e3
    flat = 2 * 2 * nbytes / HBM  # concatenate (read+write) and the divide (read+write)
    for link, (beta, hop) in links.items():
        row = []
        for n in (2, 4, 8):
            comm = k * 2 * (n - 1) * hop + 2 * (n - 1) / n * nbytes / beta
            exposed = max(comm / k, comm - bw_share * tc * (k - 1) / k)
            e = tc / (tc + exposed + flat)
            e0 = tc / (tc + comm + flat)
            row.append(f"N={n}: comm {comm*1e3:.3f} ms, exposed {exposed*1e3:.3f} ms, E {100*e:.1f}% (no overlap {100*e0:.1f}%)")
        print("  ", link, "\n     " + "\n     ".join(row))
