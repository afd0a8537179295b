"""Load a model package, inspect one image, print the result: python samples/python_api.py PACKAGE IMAGE"""
import sys

from edge_ad.runtime import Detector

detector = Detector.load(sys.argv[1], backend="auto")  # verifies the package, picks TensorRT > CUDA > CPU
result = detector.predict(sys.argv[2])  # a file path or a BGR uint8 array
print(f"{result.status} score={result.score:.4f} normalized={result.normalized_score:.3f} (0.5 = threshold)")
for r in result.regions:
    print(f"  defect at x={r.x} y={r.y} {r.w}x{r.h}, area {r.area} px, peak {r.peak:.3f}")
