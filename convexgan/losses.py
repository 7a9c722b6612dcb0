"""Data-fitting terms F(Z) of predictions Z (n, c) against targets Y (n, c), averaged over samples.

Each loss gives its value, its gradient, and its convex conjugate F*, so that any dual point
``Theta`` yields the lower bound ``-F*(Theta)`` used by the duality-gap certificate. The dual
points the solvers use are ``alpha * grad(Z, Y)`` with ``0 <= alpha <= 1``, always inside the
conjugate's domain.
"""
import torch
import torch.nn.functional as nnf


class Loss:
    def value(self, Z, Y):
        raise NotImplementedError

    def grad(self, Z, Y):
        raise NotImplementedError

    def conjugate(self, Theta, Y):
        raise NotImplementedError

    def bregman(self, Z_new, Z, Y):
        """``F(Z_new) - F(Z) - <grad F(Z), Z_new - Z>`` (>= 0), in float64 against cancellation."""
        Z_new, Z, Y = Z_new.double(), Z.double(), Y.double()
        return float(self.value(Z_new, Y) - self.value(Z, Y) - (self.grad(Z, Y) * (Z_new - Z)).sum())

    def intercept_hessian(self, Z, Y):
        """The Hessian (c, c) of ``b -> value(Z + b, Y)`` at b = 0."""
        raise NotImplementedError

    def optimal_intercept(self, Z, Y, b):
        """The intercept b (c,) minimizing ``value(Z + b, Y)``, by damped Newton from ``b``."""
        for _ in range(100):
            g = self.grad(Z + b, Y).sum(0)
            if g.abs().max() <= 1e-15:
                break
            direction = torch.linalg.lstsq(self.intercept_hessian(Z + b, Y), g[:, None]).solution[:, 0]
            f0, step = self.value(Z + b, Y), 1.0
            while self.value(Z + b - step * direction, Y) > f0 - 0.25 * step * (g @ direction) and step > 1e-10:
                step *= 0.5
            if step <= 1e-10:
                break
            b = b - step * direction
        return b


class SquaredLoss(Loss):
    """``F(Z) = 1/(2n) ||Z - Y||_F^2``."""

    def value(self, Z, Y):
        return 0.5 * ((Z - Y) ** 2).sum() / Z.shape[0]

    def grad(self, Z, Y):
        return (Z - Y) / Z.shape[0]

    def conjugate(self, Theta, Y):
        return 0.5 * Theta.shape[0] * (Theta ** 2).sum() + (Theta * Y).sum()

    def bregman(self, Z_new, Z, Y):
        return float(0.5 * ((Z_new - Z) ** 2).sum() / Z.shape[0])

    def optimal_intercept(self, Z, Y, b):
        return (Y - Z).mean(0)


class LogisticLoss(Loss):
    """``F(z) = mean_j log(1 + exp(-y_j z_j))`` with labels y in {-1, +1}, shape (n, 1)."""

    def value(self, Z, Y):
        return nnf.softplus(-Y * Z).sum() / Z.shape[0]

    def grad(self, Z, Y):
        return -Y * torch.sigmoid(-Y * Z) / Z.shape[0]

    def conjugate(self, Theta, Y):
        t = (-Theta.shape[0] * Theta * Y).clamp(0, 1)  # the dual variable's share of each sample
        return (torch.xlogy(t, t) + torch.xlogy(1 - t, 1 - t)).sum() / Theta.shape[0]

    def bregman(self, Z_new, Z, Y):
        # per sample, with margins m = -y z and p = sigmoid(m): log1p(p expm1(dm)) - p dm
        delta = (-Y * (Z_new - Z)).double()
        p = torch.sigmoid(-Y * Z).double()
        return float((torch.log1p(p * torch.expm1(delta)) - p * delta).sum() / Z.shape[0])

    def intercept_hessian(self, Z, Y):
        p = torch.sigmoid(Z)
        return (p * (1 - p)).mean(0, keepdim=True)


class CrossEntropyLoss(Loss):
    """``F(Z) = mean_j (logsumexp(z_j) - z_j^T y_j)`` with one-hot targets Y (n, c)."""

    def value(self, Z, Y):
        return (torch.logsumexp(Z, 1) - (Z * Y).sum(1)).sum() / Z.shape[0]

    def grad(self, Z, Y):
        return (torch.softmax(Z, 1) - Y) / Z.shape[0]

    def conjugate(self, Theta, Y):
        q = (Theta.shape[0] * Theta + Y).clamp_min(0)  # a point of the probability simplex
        return torch.xlogy(q, q).sum() / Theta.shape[0]

    def bregman(self, Z_new, Z, Y):
        # per sample, with p = softmax(z): log1p(sum_k p_k expm1(dz_k)) - <p, dz>
        delta, p = (Z_new - Z).double(), torch.softmax(Z.double(), 1)
        return float((torch.log1p((p * torch.expm1(delta)).sum(1)) - (p * delta).sum(1)).sum() / Z.shape[0])

    def intercept_hessian(self, Z, Y):
        p = torch.softmax(Z, 1)
        return torch.diag(p.mean(0)) - p.T @ p / Z.shape[0]


LOSSES = {"squared": SquaredLoss, "logistic": LogisticLoss, "cross_entropy": CrossEntropyLoss}
