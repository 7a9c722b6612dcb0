"""Penalties on the stacked group weights W (d, G, c): G groups (patterns), c outputs.

``Penalty`` gives the contract: ``value``, ``prox`` (for a step size), ``dual_norms`` (the dual
norm of each group of a gradient, which the duality gap scales against ``lam``) and
``group_norms`` (zero exactly for inactive groups).
"""
import torch


class Penalty:
    """A penalty ``lam * sum_g ||W_g||`` on the stacked group weights W (d, G, c).

    Parameters
    ----------
    lam : float
        The weight decay, > 0.
    """

    def __init__(self, lam):
        self.lam = lam

    def group_norms(self, W):
        """The norm of every group, zero exactly for the inactive ones.

        Parameters
        ----------
        W : torch.Tensor of shape (d, G, c)
            Group weights.

        Returns
        -------
        torch.Tensor
            (G, c) for ``GroupL2``, (G,) for ``NuclearNorm``.
        """
        raise NotImplementedError

    def value(self, W):
        """The penalty's value.

        Parameters
        ----------
        W : torch.Tensor of shape (d, G, c)
            Group weights.

        Returns
        -------
        torch.Tensor
            The scalar ``lam * sum(group_norms(W))``.
        """
        return self.lam * self.group_norms(W).sum()

    def prox(self, W, step):
        """The proximal map ``argmin_V 1/2 ||V - W||^2 + step * value(V)``.

        Parameters
        ----------
        W : torch.Tensor of shape (d, G, c)
            The point.
        step : float
            The step size, > 0.

        Returns
        -------
        torch.Tensor of shape (d, G, c)
            The shrunk groups.
        """
        raise NotImplementedError

    def dual_norms(self, grad):
        """The dual norm of every group of a gradient: optimality asks for ``<= lam``.

        Parameters
        ----------
        grad : torch.Tensor of shape (d, G, c)
            A gradient in the weights.

        Returns
        -------
        torch.Tensor
            The same shape as ``group_norms``.
        """
        raise NotImplementedError


class GroupL2(Penalty):
    """``lam * sum_{g,k} ||W[:, g, k]||_2``: every output of every group is its own l2 group.

    For c = 1 this is the group lasso of the convex ReLU program; for c > 1 it is the
    separable penalty of networks whose hidden neurons each feed one output.

    Parameters
    ----------
    lam : float
        The weight decay, > 0.
    """

    def group_norms(self, W):
        return torch.linalg.vector_norm(W, dim=0)

    def prox(self, W, step):
        norms = self.group_norms(W)
        return W * (1 - step * self.lam / norms.clamp_min(1e-300)).clamp_min(0)

    def dual_norms(self, grad):
        return self.group_norms(grad)

    def prox_metric(self, Z, step, metric):
        """The proximal map in a diagonal metric, ``argmin_W 1/2 ||W - Z||_M^2 + step lam sum ||W_gk||``.

        A nonzero group is ``W = m z tau / (m tau + t)`` (t = step lam) with ``tau = ||W||`` the root
        of ``||m z / (m tau + t)|| = 1``, found by Newton's method on the reciprocal of the norm,
        which is nearly linear in tau (as in trust-region solvers); zero when ``||m z|| <= t``.

        Parameters
        ----------
        Z : torch.Tensor of shape (d, G, c)
            The point.
        step : float
            The step size, > 0.
        metric : torch.Tensor of shape (d,)
            The diagonal of ``M``, positive.

        Returns
        -------
        torch.Tensor of shape (d, G, c)
            The shrunk groups.
        """
        t = step * self.lam
        m = metric.reshape(-1, *([1] * (Z.ndim - 1)))
        mz = m * Z
        active = torch.linalg.vector_norm(mz, dim=0) > t
        tau = torch.linalg.vector_norm(Z, dim=0) * 0.5  # below the root: the norm decreases in tau
        for _ in range(6):  # quadratic convergence: float32 accuracy after about four
            denominator = m * tau + t
            norm = torch.linalg.vector_norm(mz / denominator, dim=0).clamp_min(1e-300)
            slope = (m * (mz / denominator) ** 2 / denominator).sum(0) / norm ** 3  # d(1/norm)/dtau
            tau = (tau - (1 / norm - 1) / slope).clamp_min(0)
        W = mz * tau / (m * tau + t)
        return torch.where(active, W, torch.zeros_like(W))


class NuclearNorm(Penalty):
    """``lam * sum_g ||W[:, g, :]||_*``: the exact penalty of gated ReLU networks with c outputs.

    Neurons sharing a gate combine into one d x c matrix of rank at most their number; the prox
    soft-thresholds each group's singular values.

    Parameters
    ----------
    lam : float
        The weight decay, > 0.
    """

    def group_norms(self, W):
        return torch.linalg.svdvals(W.transpose(0, 1)).sum(-1)

    def prox(self, W, step):
        U, s, Vh = torch.linalg.svd(W.transpose(0, 1), full_matrices=False)
        s = (s - step * self.lam).clamp_min(0)
        return ((U * s[:, None, :]) @ Vh).transpose(0, 1)

    def dual_norms(self, grad):
        return torch.linalg.matrix_norm(grad.transpose(0, 1), ord=2)
