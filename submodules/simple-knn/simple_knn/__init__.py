"""simple_knn._C.distCUDA2(points [N, 3] float CUDA) -> [N]: exact mean squared distance of each point to its
3 nearest other points (duplicates count, at distance 0). With N < 4 the mean is over the N - 1 others;
N == 1 gives 0."""
