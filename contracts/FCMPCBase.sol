// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// @title The community and the fixed-point arithmetic shared by the FC-MPC coordinators
/// @notice One source of truth for both coordination modes: the deployment parameters and their
/// checks, the prosumers and their bounds, and what a coordinator computes for an upload (the
/// bounds check, the committed iterate and theta^2). `FCMPCCoordinator` (the paper's Algorithm 2)
/// runs this code on every upload; `FCMPCCommitCoordinator` runs the same code on one leaf when a
/// fraud proof re-executes it, so a leaf that passes one passes the other.
/// @dev Vectors are `bytes` of exactly 4 * nu bytes: nu big-endian two's-complement int32
/// fixed-point values in the order of ecjax/layout.py (bc, bd, ugb, ev, bt[j] for j != i; blocks
/// of length N).
abstract contract FCMPCBase {
    /// @notice Deployment parameters (numbers the contract needs; the rest is in configHash).
    /// @param configHash keccak256 of the run configuration (model, weights, tolerance, p_max,
    /// fixed-point scale), computed off chain by ecjax.chain.config.
    /// @param nAgents agents in the community (prosumers and consumers), n.
    /// @param horizon prediction horizon N.
    /// @param wNum numerator of the combination weight w = wNum / wDen, 0 < w <= 1.
    /// @param wDen denominator of w.
    /// @param pMax last iteration of a step.
    /// @param period seconds an iteration stays open (full mode) or a commitment stays open to
    /// challenges (commit mode).
    /// @param kappa2 tolerance squared, in fixed-point units squared (scale^2).
    struct Config {
        bytes32 configHash;
        uint32 nAgents;
        uint32 horizon;
        uint32 wNum;
        uint32 wDen;
        uint32 pMax;
        uint64 period;
        uint256 kappa2;
    }

    /// @notice Per-block upper bounds of one prosumer, fixed point (lower bounds are 0).
    struct Bounds {
        uint32 bc;
        uint32 bd;
        uint32 ugb;
        uint32 ev;
        uint32 bt;
    }

    // ---------------------------------------------------------------- errors
    /// @notice The sender is not a registered prosumer.
    error NotAgent(address sender);
    /// @notice A vector has not exactly 4 * nu bytes.
    error BadLength(uint256 length, uint256 expected);
    /// @notice Value `index` of the vector is outside [0, bound] (bound 0 for trades at p = 0).
    error OutOfBounds(uint256 index, uint256 value, uint256 bound);
    /// @notice Invalid deployment parameter (code: 1 agents, 2 ids, 3 w, 4 horizon/n, 5 period,
    /// 6 bounds, 7 duplicate agent, 8 pMax, 9 bonds).
    error InvalidConfig(uint256 code);

    // ---------------------------------------------------------------- configuration
    bytes32 public immutable configHash;
    uint256 public immutable nAgents;
    uint256 public immutable horizon;
    /// @notice Length of an input vector u_i: (4 + n - 1) * N.
    uint256 public immutable nu;
    uint256 public immutable nProsumers;
    uint256 public immutable wNum;
    uint256 public immutable wDen;
    uint256 public immutable kappa2;
    uint32 public immutable pMax;
    uint64 public immutable period;

    /// @notice Prosumer addresses, by prosumer index.
    address[] public agents;
    /// @notice Community index (0..n-1, as in ecjax/layout.py) of each prosumer.
    uint16[] public agentIds;
    /// @dev Prosumer index + 1 of an address (0: not an agent).
    mapping(address => uint256) internal indexPlusOne;
    /// @dev Packed bounds: bc << 224 | bd << 192 | ugb << 160 | ev << 128 | bt << 96.
    uint256[] internal packedBounds;

    uint256 internal constant LANE = 0xffffffff;
    /// @notice Denominator of a proposed weight: lambda_i = lane / WEIGHT_ONE (FCMPCCoordinator).
    uint256 public constant WEIGHT_ONE = 1_000_000_000;
    /// @dev Packed bounds with the trade bound cleared (p = 0: trades must be 0).
    uint256 internal constant BT_MASK = ~(LANE << 96);

    constructor(Config memory c, address[] memory agents_, uint16[] memory ids_, Bounds[] memory bounds_) {
        uint256 np = agents_.length;
        if (np == 0 || np > 64) revert InvalidConfig(1);
        if (ids_.length != np || bounds_.length != np) revert InvalidConfig(2);
        if (c.wDen == 0 || c.wNum == 0 || c.wNum > c.wDen) revert InvalidConfig(3);
        if (c.horizon == 0 || c.nAgents < np || c.nAgents > 4096 || c.horizon > 4096) revert InvalidConfig(4);
        if (c.period == 0 || c.period > type(uint32).max) revert InvalidConfig(5);
        if (c.pMax > type(uint16).max) revert InvalidConfig(8);
        configHash = c.configHash;
        nAgents = c.nAgents;
        horizon = c.horizon;
        nu = (uint256(c.nAgents) + 3) * c.horizon;
        nProsumers = np;
        wNum = c.wNum;
        wDen = c.wDen;
        kappa2 = c.kappa2;
        pMax = c.pMax;
        period = c.period;
        for (uint256 i; i < np; ++i) {
            address a = agents_[i];
            if (a == address(0)) revert InvalidConfig(1);
            if (indexPlusOne[a] != 0) revert InvalidConfig(7);
            if (ids_[i] >= c.nAgents || (i > 0 && ids_[i] <= ids_[i - 1])) revert InvalidConfig(2);
            Bounds memory b = bounds_[i];
            uint32 lim = type(uint32).max >> 1; // values are int32: bounds must be < 2^31
            if (b.bc > lim || b.bd > lim || b.ugb > lim || b.ev > lim || b.bt > lim) revert InvalidConfig(6);
            indexPlusOne[a] = i + 1;
            agents.push(a);
            agentIds.push(ids_[i]);
            packedBounds.push(
                (uint256(b.bc) << 224) | (uint256(b.bd) << 192) | (uint256(b.ugb) << 160) | (uint256(b.ev) << 128)
                    | (uint256(b.bt) << 96)
            );
        }
    }

    // ---------------------------------------------------------------- views

    /// @notice Prosumer index of an address (reverts NotAgent).
    function agentIndex(address a) external view returns (uint256) {
        uint256 k = indexPlusOne[a];
        if (k == 0) revert NotAgent(a);
        return k - 1;
    }

    /// @notice Per-block bounds of prosumer i.
    function bounds(uint256 i) external view returns (Bounds memory b) {
        uint256 x = packedBounds[i];
        b.bc = uint32(x >> 224);
        b.bd = uint32(x >> 192);
        b.ugb = uint32(x >> 160);
        b.ev = uint32(x >> 128);
        b.bt = uint32(x >> 96);
    }

    // ---------------------------------------------------------------- internals

    function _agent() internal view returns (uint256) {
        uint256 k = indexPlusOne[msg.sender];
        if (k == 0) revert NotAgent(msg.sender);
        unchecked {
            return k - 1;
        }
    }

    /// @dev Revert OutOfBounds unless every lane of u is <= its block's bound (unsigned compare:
    /// a negative int32 reads as >= 2^31 > any bound).
    function _checkBounds(uint256 b, bytes calldata u) internal view {
        uint256 n_ = nu;
        uint256 N = horizon;
        bytes4 sel = OutOfBounds.selector;
        assembly {
            let bound := shr(224, b)
            let k := 0
            let blk := 0
            let l := 0
            let nw := shr(3, add(n_, 7))
            for { let w := 0 } lt(w, nw) { w := add(w, 1) } {
                let A := calldataload(add(u.offset, shl(5, w)))
                for { let sh := 224 } and(lt(l, n_), lt(sh, 256)) { sh := sub(sh, 32) } {
                    let a := and(shr(sh, A), LANE)
                    if gt(a, bound) {
                        let m := mload(0x40)
                        mstore(m, sel)
                        mstore(add(m, 4), l)
                        mstore(add(m, 36), a)
                        mstore(add(m, 68), bound)
                        revert(m, 100)
                    }
                    l := add(l, 1)
                    k := add(k, 1)
                    if eq(k, N) {
                        k := 0
                        blk := add(blk, 1)
                        let q := blk
                        if gt(q, 4) { q := 4 }
                        bound := and(shr(sub(224, shl(5, q)), b), LANE)
                    }
                }
            }
        }
    }

    /// @dev `_combineWith` at the deployment's uniform weight w = wNum / wDen.
    function _combine(uint256 b, bytes calldata uStar, bytes calldata uPrev)
        internal
        view
        returns (uint256 th2, bytes32 h)
    {
        return _combineWith(b, uStar, uPrev, wNum, wDen);
    }

    /// @dev Bounds check of uStar, then lane by lane, with the weight num / den (0 <= num <= den)
    /// c = (num * a + (den - num) * b + den / 2) / den, theta2 += (c - b)^2; returns theta2
    /// and keccak256 of the packed committed iterate.
    function _combineWith(uint256 b, bytes calldata uStar, bytes calldata uPrev, uint256 num, uint256 den)
        internal
        view
        returns (uint256 th2, bytes32 h)
    {
        uint256 n_ = nu;
        uint256 N = horizon;
        bytes4 sel = OutOfBounds.selector;
        assembly {
            let cmp := sub(den, num)
            let half := shr(1, den)
            let out := mload(0x40)
            let bound := shr(224, b)
            let k := 0
            let blk := 0
            let l := 0
            let nw := shr(3, add(n_, 7))
            for { let w := 0 } lt(w, nw) { w := add(w, 1) } {
                let off := shl(5, w)
                let A := calldataload(add(uStar.offset, off))
                let B := calldataload(add(uPrev.offset, off))
                let C := 0
                for { let sh := 224 } and(lt(l, n_), lt(sh, 256)) { sh := sub(sh, 32) } {
                    let a := and(shr(sh, A), LANE)
                    if gt(a, bound) {
                        let m := mload(0x40)
                        mstore(m, sel)
                        mstore(add(m, 4), l)
                        mstore(add(m, 36), a)
                        mstore(add(m, 68), bound)
                        revert(m, 100)
                    }
                    let pb := and(shr(sh, B), LANE)
                    let c := div(add(add(mul(num, a), mul(cmp, pb)), half), den)
                    C := or(C, shl(sh, c))
                    // (c - pb) mod 2^256 squared equals (c - pb)^2 mod 2^256 (exact: < 2^64)
                    let d := sub(c, pb)
                    th2 := add(th2, mul(d, d))
                    l := add(l, 1)
                    k := add(k, 1)
                    if eq(k, N) {
                        k := 0
                        blk := add(blk, 1)
                        let q := blk
                        if gt(q, 4) { q := 4 }
                        bound := and(shr(sub(224, shl(5, q)), b), LANE)
                    }
                }
                mstore(add(out, off), C)
            }
            h := keccak256(out, shl(2, n_))
        }
    }
}
