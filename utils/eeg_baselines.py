"""Classical generative and completion baselines for EEG windows (docs/design.md §8).

Shape letters: N windows, C channels, T time samples, p model order, H forecast horizon (samples).

- :class:`LinearVAR`: a linear vector-autoregressive Gaussian model ``x_t = c + sum_i A_i x_{t-i} + e_t``
  fitted by least squares on training windows (order fixed or chosen by AIC); samples windows after a
  burn-in and gives conditional-mean forecasts (``multivariate=False`` fits one AR model per channel).
- :func:`phase_randomize`: surrogates with the same amplitude spectra and random phases shared by all
  channels, so every auto- and cross-spectrum is kept (a Gaussian anchor).
- Gap filling and forecasting baselines: :func:`forecast_zeros`, :func:`fill_gap_zeros`,
  :func:`fill_gap_linear`, :func:`fill_gap_ar` (forward AR forecast blended with a backward one).

Gap masks are boolean ``mask_NT`` (or one ``mask_T`` for all windows), True where samples are missing.
All signals are µV.
"""
from __future__ import annotations

import logging

import numpy as np

from .errors import UserError

logger = logging.getLogger(__name__)

__all__ = ["LinearVAR", "phase_randomize", "forecast_zeros", "fill_gap_zeros", "fill_gap_linear",
           "fill_gap_ar", "mask_runs"]


def _windows(x_NCT: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x_NCT, dtype=np.float64)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[0] == 0 or x.shape[2] == 0:
        raise UserError(f"{name}: got shape {x.shape}; expected (N, C, T) windows")
    if not np.all(np.isfinite(x)):
        raise UserError(f"{name}: holds NaN or Inf values")
    return x


class LinearVAR:
    """Linear vector-autoregressive Gaussian model fitted by least squares.

    Parameters
    ----------
    order : int | None
        Model order p; ``None`` chooses it by AIC in ``1..max_order``.
    max_order : int
        Largest order tried when ``order`` is None.
    multivariate : bool
        True: full VAR (every channel predicted from every channel's past). False: one independent
        univariate AR(p) per channel (no cross terms, diagonal noise).
    ridge : float
        Tiny ridge on the normal equations, relative to their mean diagonal (numerical safety only).

    Attributes
    ----------
    A_pCC : ndarray, shape (p, C, C)
        ``A_pCC[i]`` multiplies ``x_{t-i-1}``.
    c_C : ndarray, shape (C,)
        Intercept (µV).
    noise_cov_CC : ndarray, shape (C, C)
        Innovation covariance (µV²).
    aic_ : dict[int, float]
        AIC per order tried (only when the order was chosen by AIC).
    """

    def __init__(self, order: int | None = None, max_order: int = 20, multivariate: bool = True,
                 ridge: float = 1e-8) -> None:
        if order is not None and int(order) < 1:
            raise UserError(f"LinearVAR order must be >= 1, got {order}")
        if int(max_order) < 1:
            raise UserError(f"LinearVAR max_order must be >= 1, got {max_order}")
        self.order = None if order is None else int(order)
        self.max_order = int(max_order)
        self.multivariate = bool(multivariate)
        self.ridge = float(ridge)
        self.A_pCC: np.ndarray | None = None
        self.c_C: np.ndarray | None = None
        self.noise_cov_CC: np.ndarray | None = None
        self.aic_: dict[int, float] = {}

    # ----------------------------------------------------------------------------------------- fitting
    @staticmethod
    def _design(x_NCT: np.ndarray, p: int, p_max: int) -> tuple[np.ndarray, np.ndarray]:
        """Lagged regressors (rows = (window, t) with t >= p_max so every order uses the same rows)."""
        n, n_ch, n_t = x_NCT.shape
        targets = x_NCT[:, :, p_max:].transpose(0, 2, 1).reshape(-1, n_ch)  # (N*(T-p_max), C)
        lags = [x_NCT[:, :, p_max - i - 1: n_t - i - 1].transpose(0, 2, 1).reshape(-1, n_ch) for i in range(p)]
        return np.concatenate(lags + [np.ones((targets.shape[0], 1))], axis=1), targets

    def _solve(self, Z: np.ndarray, Y: np.ndarray, p: int, n_ch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.multivariate:
            G = Z.T @ Z
            G[np.diag_indices_from(G)] += self.ridge * np.mean(np.diag(G))
            B = np.linalg.solve(G, Z.T @ Y)  # (p*C + 1, C)
            resid = Y - Z @ B
            A_pCC = B[:-1].reshape(p, n_ch, n_ch).transpose(0, 2, 1)  # A[i][out, in]
            c_C = B[-1]
            cov = resid.T @ resid / resid.shape[0]
            return A_pCC, c_C, cov
        A_pCC = np.zeros((p, n_ch, n_ch))
        c_C = np.zeros(n_ch)
        var_C = np.zeros(n_ch)
        for ch in range(n_ch):
            cols = [i * n_ch + ch for i in range(p)] + [Z.shape[1] - 1]
            Zc = Z[:, cols]
            G = Zc.T @ Zc
            G[np.diag_indices_from(G)] += self.ridge * np.mean(np.diag(G))
            b = np.linalg.solve(G, Zc.T @ Y[:, ch])
            A_pCC[:, ch, ch] = b[:-1]
            c_C[ch] = b[-1]
            var_C[ch] = np.mean((Y[:, ch] - Zc @ b) ** 2)
        return A_pCC, c_C, np.diag(var_C)

    def fit(self, train_NCT: np.ndarray) -> "LinearVAR":
        """Fit on training windows (µV); regressions never cross window boundaries. Returns ``self``."""
        x = _windows(train_NCT, "train_NCT")
        n, n_ch, n_t = x.shape
        orders = [self.order] if self.order is not None else list(range(1, self.max_order + 1))
        p_max = max(orders)
        if n_t <= p_max + 1:
            raise UserError(f"LinearVAR: windows have {n_t} samples, too short for order {p_max}; "
                            "lower the order")
        best = None
        for p in orders:
            Z, Y = self._design(x, p, p_max)
            n_params = (p * n_ch * n_ch if self.multivariate else p * n_ch) + n_ch
            if Y.shape[0] <= n_params:
                raise UserError(f"LinearVAR: {Y.shape[0]} training samples cannot fit order {p} with {n_ch} "
                                "channels; give more windows or lower the order")
            A_pCC, c_C, cov = self._solve(Z, Y, p, n_ch)
            if len(orders) > 1:
                sign, logdet = np.linalg.slogdet(cov)
                aic = float(logdet + 2.0 * n_params / Y.shape[0])
                self.aic_[p] = aic
                if best is None or aic < best[0]:
                    best = (aic, p, A_pCC, c_C, cov)
            else:
                best = (0.0, p, A_pCC, c_C, cov)
        _, p, self.A_pCC, self.c_C, self.noise_cov_CC = best
        self.order = p
        radius = self.spectral_radius()
        logger.info("LinearVAR: order %d (%s), %d channels, spectral radius %.4f", p,
                    "AIC" if len(orders) > 1 else "fixed", n_ch, radius)
        if radius >= 1.0:
            logger.warning("LinearVAR: fitted model is not stable (spectral radius %.4f >= 1); samples will "
                           "diverge", radius)
        return self

    # ------------------------------------------------------------------------------------ properties
    def _check_fitted(self) -> None:
        if self.A_pCC is None:
            raise RuntimeError("LinearVAR.fit must be called first")

    @property
    def n_channels(self) -> int:
        self._check_fitted()
        return self.A_pCC.shape[1]

    def companion(self) -> np.ndarray:
        """Companion matrix, shape (p*C, p*C), of the state ``[x_t, x_{t-1}, ..., x_{t-p+1}]``."""
        self._check_fitted()
        p, n_ch = self.order, self.n_channels
        M = np.zeros((p * n_ch, p * n_ch))
        M[:n_ch] = np.concatenate(list(self.A_pCC), axis=1)
        M[n_ch:, :-n_ch] = np.eye((p - 1) * n_ch)
        return M

    def spectral_radius(self) -> float:
        """Largest eigenvalue modulus of the companion matrix (< 1 means stationary)."""
        return float(np.max(np.abs(np.linalg.eigvals(self.companion()))))

    def stationary_mean(self) -> np.ndarray:
        """Process mean ``(I - sum_i A_i)^-1 c``, shape (C,), µV."""
        self._check_fitted()
        return np.linalg.solve(np.eye(self.n_channels) - self.A_pCC.sum(axis=0), self.c_C)

    def stationary_cov(self) -> np.ndarray:
        """Stationary covariance of ``x_t``, shape (C, C), µV² (discrete Lyapunov equation)."""
        from scipy.linalg import solve_discrete_lyapunov

        M = self.companion()
        Q = np.zeros_like(M)
        n_ch = self.n_channels
        Q[:n_ch, :n_ch] = self.noise_cov_CC
        return solve_discrete_lyapunov(M, Q)[:n_ch, :n_ch]

    # ------------------------------------------------------------------------------------- sampling
    def sample(self, n: int, n_times: int, burn_in: int | None = None,
               rng: np.random.Generator | int | None = None) -> np.ndarray:
        """Draw ``n`` windows of ``n_times`` samples, shape (N, C, T), µV.

        Each window runs from the stationary mean for ``burn_in`` samples (default ``max(10 p, 500)``)
        before the kept samples, so start-up transients are gone.
        """
        self._check_fitted()
        rng = np.random.default_rng(rng)
        p, n_ch = self.order, self.n_channels
        burn_in = max(10 * p, 500) if burn_in is None else int(burn_in)
        L = np.linalg.cholesky(self.noise_cov_CC + 1e-12 * np.eye(n_ch) * np.trace(self.noise_cov_CC))
        total = burn_in + int(n_times)
        hist = np.tile(self.stationary_mean(), (n, p, 1))  # (N, p, C), hist[:, 0] = most recent
        out = np.empty((n, total, n_ch))
        A_stack = np.concatenate(list(self.A_pCC), axis=1)  # (C, p*C)
        for t in range(total):
            e = rng.standard_normal((n, n_ch)) @ L.T
            x_t = hist.reshape(n, -1) @ A_stack.T + self.c_C + e
            out[:, t] = x_t
            hist = np.concatenate([x_t[:, None], hist[:, :-1]], axis=1)
        return out[:, burn_in:].transpose(0, 2, 1).copy()

    def forecast(self, context_NCT: np.ndarray, horizon: int) -> np.ndarray:
        """Conditional-mean forecast of the next ``horizon`` samples after each context window.

        Parameters
        ----------
        context_NCT : ndarray, shape (N, C, T_ctx), µV
            Past samples (at least ``order`` of them).
        horizon : int
            Samples to predict.

        Returns
        -------
        ndarray, shape (N, C, H), µV
        """
        self._check_fitted()
        x = _windows(context_NCT, "context_NCT")
        p = self.order
        if x.shape[2] < p:
            raise UserError(f"forecast: context has {x.shape[2]} samples but the model needs {p} (its order)")
        if x.shape[1] != self.n_channels:
            raise UserError(f"forecast: context has {x.shape[1]} channels but the model has {self.n_channels}")
        n = x.shape[0]
        hist = x[:, :, -p:][:, :, ::-1].transpose(0, 2, 1)  # (N, p, C), most recent first
        A_stack = np.concatenate(list(self.A_pCC), axis=1)
        out = np.empty((n, self.n_channels, int(horizon)))
        for h in range(int(horizon)):
            x_t = hist.reshape(n, -1) @ A_stack.T + self.c_C
            out[:, :, h] = x_t
            hist = np.concatenate([x_t[:, None], hist[:, :-1]], axis=1)
        return out


def phase_randomize(x_NCT: np.ndarray, rng: np.random.Generator | int | None = None) -> np.ndarray:
    """Phase-randomised surrogates of real windows, shape (N, C, T), µV.

    Each window's FFT keeps its magnitudes; every positive frequency gets one uniform random phase shift
    shared by all channels (DC and the Nyquist bin keep theirs so the output stays real), so the
    amplitude spectra are kept exactly and so is every cross-spectrum; nothing else is.
    """
    x = _windows(x_NCT, "x_NCT")
    rng = np.random.default_rng(rng)
    n, _, n_t = x.shape
    X_NCF = np.fft.rfft(x, axis=-1)
    n_f = X_NCF.shape[-1]
    phi_NF = rng.uniform(0.0, 2.0 * np.pi, size=(n, n_f))
    phi_NF[:, 0] = 0.0
    if n_t % 2 == 0:
        phi_NF[:, -1] = 0.0
    return np.fft.irfft(X_NCF * np.exp(1j * phi_NF)[:, None, :], n=n_t, axis=-1)


# ------------------------------------------------------------------------------------------ gap filling
def _mask_NT(mask: np.ndarray, n: int, n_t: int) -> np.ndarray:
    m = np.asarray(mask, dtype=bool)
    if m.ndim == 1:
        m = np.broadcast_to(m, (n, m.shape[0]))
    if m.shape != (n, n_t):
        raise UserError(f"mask has shape {np.shape(mask)}; expected ({n_t},) or ({n}, {n_t}) (True = missing)")
    return m


def mask_runs(mask_T: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous runs of True in a 1D mask as ``[(start, stop), ...]`` (stop exclusive)."""
    m = np.concatenate([[False], np.asarray(mask_T, dtype=bool), [False]])
    d = np.diff(m.astype(np.int8))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


def forecast_zeros(context_NCT: np.ndarray, horizon: int) -> np.ndarray:
    """The zero forecast, shape (N, C, H) (EEG is zero-mean after high-pass filtering)."""
    x = _windows(context_NCT, "context_NCT")
    return np.zeros((x.shape[0], x.shape[1], int(horizon)))


def fill_gap_zeros(x_NCT: np.ndarray, mask) -> np.ndarray:
    """Copy of ``x_NCT`` with the masked samples set to zero."""
    x = _windows(x_NCT, "x_NCT").copy()
    m = _mask_NT(mask, x.shape[0], x.shape[2])
    x[np.broadcast_to(m[:, None, :], x.shape)] = 0.0
    return x


def fill_gap_linear(x_NCT: np.ndarray, mask) -> np.ndarray:
    """Fill masked samples by straight lines between the observed samples on either side.

    A gap touching the window's start or end holds the nearest observed value; a window with nothing
    observed is filled with zeros.
    """
    x = _windows(x_NCT, "x_NCT").copy()
    m = _mask_NT(mask, x.shape[0], x.shape[2])
    t = np.arange(x.shape[2])
    for i in range(x.shape[0]):
        if not m[i].any():
            continue
        obs = ~m[i]
        if not obs.any():
            x[i] = 0.0
            continue
        for c in range(x.shape[1]):
            x[i, c, m[i]] = np.interp(t[m[i]], t[obs], x[i, c, obs])
    return x


def fill_gap_ar(x_NCT: np.ndarray, mask, forward: LinearVAR, backward: LinearVAR | None = None) -> np.ndarray:
    """Fill each gap with AR forecasts: forward from the left context, blended with a backward one.

    Parameters
    ----------
    x_NCT : ndarray, shape (N, C, T), µV
        Windows; masked samples are ignored.
    mask : ndarray, shape (T,) or (N, T), bool
        True where samples are missing.
    forward : LinearVAR
        Model fitted on training windows in natural time order.
    backward : LinearVAR | None
        Model fitted on time-reversed training windows (``train[..., ::-1]``). When given, a gap with
        observed samples on both sides is ``w * forward + (1 - w) * backward`` with ``w`` falling
        linearly from 1 to 0 across the gap; gaps at the start use the backward model only.

    Returns
    -------
    ndarray, shape (N, C, T), µV
        Observed samples unchanged, gaps filled (zeros where neither side has enough context).
    """
    x = _windows(x_NCT, "x_NCT").copy()
    m = _mask_NT(mask, x.shape[0], x.shape[2])
    n_t = x.shape[2]
    for i in range(x.shape[0]):
        for start, stop in mask_runs(m[i]):
            g = stop - start
            fwd = bwd = None
            if start >= forward.order:  # earlier gaps are already filled, so the left context is complete
                fwd = forward.forecast(x[i:i + 1, :, :start], g)[0]
            if backward is not None and n_t - stop >= backward.order and not m[i, stop:stop + backward.order].any():
                right = x[i:i + 1, :, stop:][:, :, ::-1]
                bwd = backward.forecast(right, g)[0][:, ::-1]
            if fwd is not None and bwd is not None:
                w_T = 1.0 - (np.arange(g) + 1.0) / (g + 1.0)
                fill = w_T * fwd + (1.0 - w_T) * bwd
            elif fwd is not None:
                fill = fwd
            elif bwd is not None:
                fill = bwd
            else:
                fill = np.zeros((x.shape[1], g))
            x[i, :, start:stop] = fill
    return x
