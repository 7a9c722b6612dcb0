"""Data-fitting terms F(Z) of predictions Z (n, c) against targets Y (n, c), averaged over samples.

Each loss gives its value, its gradient, and its convex conjugate F*, so that any dual point
``Theta`` yields the lower bound ``-F*(Theta)`` used by the duality-gap certificate (``+inf``
outside the conjugate's domain). The dual points the solvers use are ``alpha * grad(Z, Y)`` with
``0 <= alpha <= 1``, always inside the domain. Losses whose conjugate is smooth on its domain
(squared, logistic) also give its gradient and diagonal Hessian (``conjugate_grad``,
``conjugate_hessian``): the curvature the Newton solver (``ssnal``) works with.

Sharded rows (``Loss.sharded``): each rank holds some rows of Z and Y; the mean divides by the
rows of all ranks, and every sum over rows (values, conjugates, divergences, the intercept's
Newton steps) is all-reduced, so that every rank gets the global value. Row-wise results
(gradients, conjugate gradients and Hessians) stay local.
"""
import copy

import torch
import torch.nn.functional as nnf

from .distributed import all_reduce_sum


class Loss:
    """A mean data-fitting term ``F(Z)`` of predictions Z (n, c) against targets Y (n, c).

    Subclasses give ``value``, ``grad`` and ``conjugate``; those with a conjugate that is smooth
    on its domain also give ``conjugate_grad`` and ``conjugate_hessian`` (the Newton solver's
    curvature), and ``intercept_hessian`` for the unpenalized intercept. ``curvature`` bounds the
    per-sample loss's second derivative in its prediction: F's gradient is ``curvature / n``
    Lipschitz in Z (the first-order solvers' step sizes come from it).
    """
    n_total = None  # the rows of all ranks, when sharded
    curvature = None

    def sharded(self, n_total):
        """This loss for one rank's rows of a program over ``n_total`` rows in all.

        Parameters
        ----------
        n_total : int
            The rows of all ranks: the mean divides by it.

        Returns
        -------
        Loss
            A shallow copy whose sums over rows are all-reduced.
        """
        loss = copy.copy(self)
        loss.n_total = int(n_total)
        return loss

    def n(self, Z):
        """The number of rows the mean divides by: all ranks' rows when sharded.

        Parameters
        ----------
        Z : torch.Tensor of shape (n, c)
            This rank's rows.

        Returns
        -------
        int
            n, or ``n_total`` when sharded.
        """
        return Z.shape[0] if self.n_total is None else self.n_total

    def total(self, terms, dim=None):
        """The sum of ``terms`` over all rows, of every rank when sharded (one all-reduce).

        Parameters
        ----------
        terms : torch.Tensor of shape (n, ...)
            Row-wise terms.
        dim : int, optional
            Sum over this axis only; by default over all entries.

        Returns
        -------
        torch.Tensor
            The sum.
        """
        return self.reduced(terms.sum() if dim is None else terms.sum(dim))

    def reduced(self, partial):
        """A sum over this rank's rows, summed over all ranks.

        Parameters
        ----------
        partial : torch.Tensor
            This rank's sum.

        Returns
        -------
        torch.Tensor
            The sum over all ranks (``partial`` itself when not sharded).
        """
        return partial if self.n_total is None else all_reduce_sum(partial)[0]

    def value(self, Z, Y):
        """The mean loss ``F(Z)``.

        Parameters
        ----------
        Z : torch.Tensor of shape (n, c)
            Predictions.
        Y : torch.Tensor of shape (n, c)
            Targets, in the loss's encoding (labels -1/+1, one-hot classes).

        Returns
        -------
        torch.Tensor
            A scalar (over all ranks' rows when sharded).
        """
        raise NotImplementedError

    def grad(self, Z, Y):
        """The gradient of ``F`` at Z.

        Parameters
        ----------
        Z : torch.Tensor of shape (n, c)
            Predictions.
        Y : torch.Tensor of shape (n, c)
            Targets.

        Returns
        -------
        torch.Tensor of shape (n, c)
            ``dF/dZ`` (it includes the 1/n of the mean).
        """
        raise NotImplementedError

    def conjugate(self, Theta, Y):
        """The convex conjugate ``F*(Theta) = sup_Z <Theta, Z> - F(Z)``.

        ``-F*(Theta)`` is the dual objective's loss term: every dual point gives a lower bound.

        Parameters
        ----------
        Theta : torch.Tensor of shape (n, c)
            A dual point (scaled gradients lie in the domain).
        Y : torch.Tensor of shape (n, c)
            Targets.

        Returns
        -------
        torch.Tensor
            A scalar, ``+inf`` outside the conjugate's domain.
        """
        raise NotImplementedError

    def conjugate_grad(self, Theta, Y):
        """The gradient of ``F*`` at Theta: the prediction Z whose gradient is Theta.

        Parameters
        ----------
        Theta : torch.Tensor of shape (n, c)
            A dual point strictly inside the domain.
        Y : torch.Tensor of shape (n, c)
            Targets.

        Returns
        -------
        torch.Tensor of shape (n, c)
            ``grad F*(Theta)``.
        """
        raise NotImplementedError(f"{type(self).__name__} has no smooth conjugate: use a first-order solver.")

    def conjugate_hessian(self, Theta, Y):
        """The Hessian of ``F*`` at Theta, which is diagonal.

        Parameters
        ----------
        Theta : torch.Tensor of shape (n, c)
            A dual point strictly inside the domain.
        Y : torch.Tensor of shape (n, c)
            Targets.

        Returns
        -------
        torch.Tensor of shape (n, c)
            The diagonal of the Hessian.
        """
        raise NotImplementedError(f"{type(self).__name__} has no smooth conjugate: use a first-order solver.")

    def in_conjugate_domain(self, Theta, Y):
        """Whether Theta is strictly inside the domain of ``F*``, where its Hessian is finite.

        Parameters
        ----------
        Theta : torch.Tensor of shape (n, c)
            A dual point.
        Y : torch.Tensor of shape (n, c)
            Targets.

        Returns
        -------
        bool
            True when it is, on every rank.
        """
        return True

    def _conjugate_or_inf(self, terms, inside):
        """``sum(terms) / n`` when Theta is in the domain on every rank, else ``+inf`` (everywhere:
        a rank outside the domain contributes inf to the one reduction)."""
        local = terms.sum() if inside else torch.tensor(torch.inf, dtype=terms.dtype, device=terms.device)
        return self.reduced(local) / self.n(terms)

    def bregman(self, Z_new, Z, Y):
        """The Bregman divergence ``F(Z_new) - F(Z) - <grad F(Z), Z_new - Z>``.

        Computed in float64 against cancellation, and 0 where it is below the rounding of the values
        (subclasses with a closed form override it); FISTA's line search compares it with the step.

        Parameters
        ----------
        Z_new, Z : torch.Tensor of shape (n, c)
            Two predictions.
        Y : torch.Tensor of shape (n, c)
            Targets.

        Returns
        -------
        float
            The divergence, >= 0.
        """
        Z_new, Z, Y = Z_new.double(), Z.double(), Y.double()
        new, old = float(self.value(Z_new, Y)), float(self.value(Z, Y))
        divergence = new - old - float(self.total(self.grad(Z, Y) * (Z_new - Z)))
        # below the rounding of the values the difference means nothing (a line search must not shrink on it)
        return 0.0 if abs(divergence) <= 64 * torch.finfo(torch.float64).eps * (abs(new) + abs(old)) else divergence

    def intercept_hessian(self, Z, Y):
        """The Hessian of ``b -> value(Z + b, Y)`` at b = 0.

        Parameters
        ----------
        Z : torch.Tensor of shape (n, c)
            Predictions.
        Y : torch.Tensor of shape (n, c)
            Targets.

        Returns
        -------
        torch.Tensor of shape (c, c)
            The Hessian in the intercept.
        """
        raise NotImplementedError

    def optimal_intercept(self, Z, Y, b):
        """The intercept minimizing ``value(Z + b, Y)``, by damped Newton from ``b``.

        Parameters
        ----------
        Z : torch.Tensor of shape (n, c)
            Predictions without intercept.
        Y : torch.Tensor of shape (n, c)
            Targets.
        b : torch.Tensor of shape (c,)
            The starting intercept.

        Returns
        -------
        torch.Tensor of shape (c,)
            The optimal intercept.
        """
        for _ in range(100):
            g = self.total(self.grad(Z + b, Y), 0)
            if g.abs().max() <= 1e-15:
                break
            direction = torch.linalg.lstsq(self.intercept_hessian(Z + b, Y), g[:, None]).solution[:, 0]
            f0, step, decrease = self.value(Z + b, Y), 1.0, g @ direction
            if decrease <= 64 * torch.finfo(f0.dtype).eps * f0.abs():
                return b - direction  # a decrease below the value's rounding: a last full Newton step
            while self.value(Z + b - step * direction, Y) > f0 - 0.25 * step * decrease and step > 1e-10:
                step *= 0.5
            if step <= 1e-10:
                break
            b = b - step * direction
        return b


class SquaredLoss(Loss):
    """The squared loss ``F(Z) = 1/(2n) ||Z - Y||_F^2``.

    Its conjugate is ``F*(Theta) = sum n/2 Theta^2 + Theta Y``, smooth everywhere.
    """
    curvature = 1.0

    def value(self, Z, Y):
        return 0.5 * self.total((Z - Y) ** 2) / self.n(Z)

    def grad(self, Z, Y):
        return (Z - Y) / self.n(Z)

    def conjugate(self, Theta, Y):
        return self.total(0.5 * self.n(Theta) * Theta ** 2 + Theta * Y)

    def conjugate_grad(self, Theta, Y):
        return self.n(Theta) * Theta + Y

    def conjugate_hessian(self, Theta, Y):
        return torch.full_like(Theta, self.n(Theta))

    def bregman(self, Z_new, Z, Y):
        return float(0.5 * self.total((Z_new - Z) ** 2) / self.n(Z))

    def optimal_intercept(self, Z, Y, b):
        return self.total(Y - Z, 0) / self.n(Z)


class LogisticLoss(Loss):
    """The logistic loss ``F(z) = mean_j log(1 + exp(-y_j z_j))``, labels y in {-1, +1} (n, 1).

    Its conjugate, with ``t = -n theta y`` in [0, 1], is ``mean_j t_j log t_j + (1 - t_j) log(1 - t_j)``.
    """
    curvature = 0.25

    def value(self, Z, Y):
        return self.total(nnf.softplus(-Y * Z)) / self.n(Z)

    def grad(self, Z, Y):
        return -Y * torch.sigmoid(-Y * Z) / self.n(Z)

    def conjugate(self, Theta, Y):
        t = self._share(Theta, Y)
        slack = _domain_slack(Theta)
        inside = bool(((t >= -slack) & (t <= 1 + slack)).all())
        t = t.clamp(0, 1)  # only rounding is clamped
        return self._conjugate_or_inf(torch.xlogy(t, t) + torch.xlogy(1 - t, 1 - t), inside)

    def _share(self, Theta, Y):
        """``t = -n Theta y`` in [0, 1] on the domain: the dual variable's share of each sample."""
        return -self.n(Theta) * Theta * Y

    def conjugate_grad(self, Theta, Y):
        t = self._share(Theta, Y)
        return -Y * (torch.log(t) - torch.log1p(-t))

    def conjugate_hessian(self, Theta, Y):
        t = self._share(Theta, Y)
        return self.n(Theta) / (t * (1 - t))

    def in_conjugate_domain(self, Theta, Y):
        t = self._share(Theta, Y)
        return float(self.total(((t <= 0) | (t >= 1)).to(Theta.dtype))) == 0

    def bregman(self, Z_new, Z, Y):
        # per sample, with margins m = -y z and p = sigmoid(m): log((1 - p) + p exp(dm)) - p dm
        margin, delta = (-Y * Z).double(), (-Y * (Z_new - Z)).double()
        p = torch.sigmoid(margin)
        return float(self.total(_log_mean_exp(torch.cat([0 * delta, delta], 1), torch.cat([1 - p, p], 1),
                                              torch.cat([nnf.logsigmoid(-margin), nnf.logsigmoid(margin)], 1))
                                - p * delta) / self.n(Z))

    def intercept_hessian(self, Z, Y):
        p = torch.sigmoid(Z)
        return self.total(p * (1 - p), 0)[None] / self.n(Z)


class CrossEntropyLoss(Loss):
    """The multinomial cross-entropy ``F(Z) = mean_j (logsumexp(z_j) - z_j^T y_j)``, one-hot Y (n, c).

    Its conjugate, with ``q_j = n theta_j + y_j`` on the probability simplex, is
    ``mean_j sum_k q_jk log q_jk``.
    """
    curvature = 0.5

    def value(self, Z, Y):
        return self.total(torch.logsumexp(Z, 1) - (Z * Y).sum(1)) / self.n(Z)

    def grad(self, Z, Y):
        return (torch.softmax(Z, 1) - Y) / self.n(Z)

    def conjugate(self, Theta, Y):
        q = self.n(Theta) * Theta + Y  # a point of the probability simplex on the domain
        slack = _domain_slack(Theta) * q.shape[1]
        inside = not ((q < -slack).any() or ((q.sum(1) - 1).abs() > slack).any())
        q = q.clamp_min(0)  # only rounding is clamped
        return self._conjugate_or_inf(torch.xlogy(q, q), inside)

    def bregman(self, Z_new, Z, Y):
        # per sample, with p = softmax(z): log(sum_k p_k exp(dz_k)) - <p, dz>
        delta, log_p = (Z_new - Z).double(), torch.log_softmax(Z.double(), 1)
        p = log_p.exp()
        return float(self.total(_log_mean_exp(delta, p, log_p) - (p * delta).sum(1, keepdim=True)) / self.n(Z))

    def intercept_hessian(self, Z, Y):
        p = torch.softmax(Z, 1)
        return self.reduced(torch.diag(p.sum(0)) - p.T @ p) / self.n(Z)


def _log_mean_exp(delta, p, log_p):
    """``log(sum_k p_k exp(delta_k))`` per row (n, 1), for the weights p (n, k) with logs ``log_p``.
    Rows whose every ``|delta_k| <= 1`` use ``log1p(sum p expm1(delta))``, exact to
    the last bits where the result is tiny; the rest the log-sum-exp form, which neither overflows
    nor takes the log of 0 when a probability saturates."""
    small = (delta.abs() <= 1).all(1, keepdim=True)
    near = torch.log1p((p * torch.expm1(delta.clamp_max(1))).sum(1, keepdim=True))
    far = torch.logsumexp(log_p + delta, 1, keepdim=True)
    return torch.where(small, near, far)


def _domain_slack(Theta):
    """Rounding tolerated at the edge of a conjugate's domain: probabilities computed in Theta's
    precision are off by a few units in the last place."""
    return 64 * torch.finfo(Theta.dtype).eps


LOSSES = {"squared": SquaredLoss, "logistic": LogisticLoss, "cross_entropy": CrossEntropyLoss}
