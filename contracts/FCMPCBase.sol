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

    /// @dev Lanes, eight to a 32-byte word (lane j of a word in bits [224 - 32j, 256 - 32j)):
    /// the word of ones in every lane, the top bit of every lane, and the low lane of every
    /// 64-bit slot (lanes 1, 3, 5, 7), with the ones and the low 64-bit slot of every 128-bit
    /// slot for the same arithmetic on wider slots.
    uint256 internal constant ONES32 = 0x0000000100000001000000010000000100000001000000010000000100000001;
    uint256 internal constant TOP32 = 0x8000000080000000800000008000000080000000800000008000000080000000;
    uint256 internal constant LOW64 = 0x00000000ffffffff00000000ffffffff00000000ffffffff00000000ffffffff;
    uint256 internal constant ONES64 = 0x0000000000000001000000000000000100000000000000010000000000000001;
    uint256 internal constant LOW128 = 0x0000000000000000ffffffffffffffff0000000000000000ffffffffffffffff;

    /// @dev Revert OutOfBounds unless every lane of u is <= its block's bound (unsigned compare:
    /// a negative int32 reads as >= 2^31 > any bound). A word at a time: every lane's top bit
    /// clear, then (bound | 2^31) - a keeps the top bit of every lane where a <= bound (no lane
    /// borrows from the next: both sides are below 2^31). Only a word that fails is read lane by
    /// lane, to name its first lane out of bounds.
    function _checkBounds(uint256 b, bytes calldata u) internal view {
        uint256 n_ = nu;
        uint256 N = horizon;
        bytes4 sel = OutOfBounds.selector;
        assembly {
            let nw := shr(3, add(n_, 7))
            // block blk of the current word's first lane, the first lane of the next block (edge),
            // and blk's bound in every lane (blocks 4.. are the trades: one bound)
            let blk := 0
            let edge := N
            let full := mul(shr(224, b), ONES32)
            for { let w := 0 } lt(w, nw) { w := add(w, 1) } {
                let l0 := shl(3, w)
                if iszero(lt(l0, edge)) {
                    blk := div(l0, N)
                    if gt(blk, 4) { blk := 4 }
                    edge := mul(add(blk, 1), N)
                    if eq(blk, 4) { edge := not(0) }
                    full := mul(and(shr(sub(224, shl(5, blk)), b), LANE), ONES32)
                }
                let bw := full
                if and(gt(add(l0, 8), edge), lt(edge, n_)) { bw := boundWord(b, w, N) }
                let A := calldataload(add(u.offset, shl(5, w)))
                {
                    let k := sub(n_, l0)
                    if lt(k, 8) { A := and(A, not(shr(shl(5, k), not(0)))) }
                }
                if or(and(A, TOP32), and(not(sub(or(bw, TOP32), A)), TOP32)) {
                    firstOutOfBounds(b, A, w, N, n_, sel)
                }
            }

            /// bound of lane l: its block's (bc, bd, ugb, ev, then bt for every trade block)
            function laneBound(bb, l, n) -> bound {
                let q := div(l, n)
                if gt(q, 4) { q := 4 }
                bound := and(shr(sub(224, shl(5, q)), bb), LANE)
            }
            /// the bounds of the eight lanes of word w, packed like the word, lane by lane (for a
            /// word across a block edge; lanes past nu get a bound too, and are read as 0)
            function boundWord(bb, w, n) -> bw {
                let l0 := shl(3, w)
                for { let j := 0 } lt(j, 8) { j := add(j, 1) } {
                    bw := or(bw, shl(sub(224, shl(5, j)), laneBound(bb, add(l0, j), n)))
                }
            }
            /// revert OutOfBounds(first lane of word w above its bound, its value, the bound)
            function firstOutOfBounds(bb, word, w, n, nTotal, selector) {
                for { let j := 0 } lt(j, 8) { j := add(j, 1) } {
                    let l := add(shl(3, w), j)
                    if iszero(lt(l, nTotal)) { break }
                    let a := and(shr(sub(224, shl(5, j)), word), LANE)
                    let bound := laneBound(bb, l, n)
                    if gt(a, bound) {
                        let m := mload(0x40)
                        mstore(m, selector)
                        mstore(add(m, 4), l)
                        mstore(add(m, 36), a)
                        mstore(add(m, 68), bound)
                        revert(m, 100)
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

    /// @dev Bounds check of uStar, then with the weight num / den (0 <= num <= den < 2^32), lane
    /// by lane c = (num * a + (den - num) * b + den / 2) / den and theta2 = sum (c - b)^2; returns
    /// theta2 and keccak256 of the packed committed iterate.
    ///
    /// A word of eight lanes at a time, split into its even and odd lanes, each lane in the low
    /// half of a 64-bit slot: the numerators of four lanes are one multiply-add (a slot stays
    /// below den * 2^32 < 2^64, so no slot carries into the next), and only the division is
    /// per lane. theta2 from the same slots: with o = 2^32, every slot of C + o - B holds
    /// d + o in (0, 2^33) (c and b are below 2^32); the squares of two such slots come out of one
    /// product with the slots swapped (x0 + x1 2^128)(x1 + x0 2^128) = x0 x1 + (x0^2 + x1^2) 2^128
    /// mod 2^256, and sum (d + o)^2 - 2 o sum (d + o) + n o^2 = sum d^2 over the n lanes read
    /// (lanes past nu are read as 0 on both sides: d = 0). Every step is exact, so the result is
    /// the lane-by-lane formula's, bit for bit (ecjax.chain.fixedpoint.combine mirrors it).
    function _combineWith(uint256 b, bytes calldata uStar, bytes calldata uPrev, uint256 num, uint256 den)
        internal
        view
        returns (uint256 th2, bytes32 h)
    {
        _checkBounds(b, uStar);
        uint256 n_ = nu;
        assembly {
            let cmp := sub(den, num)
            let halves := mul(shr(1, den), ONES64)
            let off := shl(32, ONES64)
            let out := mload(0x40)
            let nw := shr(3, add(n_, 7))
            let sq := 0
            let sum := 0
            for { let w := 0 } lt(w, nw) { w := add(w, 1) } {
                let at := shl(5, w)
                let A := calldataload(add(uStar.offset, at))
                let B := calldataload(add(uPrev.offset, at))
                {
                    let k := sub(n_, shl(3, w))
                    if lt(k, 8) {
                        let m := not(shr(shl(5, k), not(0)))
                        A := and(A, m)
                        B := and(B, m)
                    }
                }
                let Bo := and(B, LOW64)
                let Be := and(shr(32, B), LOW64)
                let Co := quotients(add(add(mul(num, and(A, LOW64)), mul(cmp, Bo)), halves), den)
                let Ce := quotients(add(add(mul(num, and(shr(32, A), LOW64)), mul(cmp, Be)), halves), den)
                mstore(add(out, at), or(Co, shl(32, Ce)))
                let Do := sub(add(Co, off), Bo)
                let De := sub(add(Ce, off), Be)
                sq := add(sq, add(add(squares2(and(Do, LOW128)), squares2(and(shr(64, Do), LOW128))),
                    add(squares2(and(De, LOW128)), squares2(and(shr(64, De), LOW128)))))
                sum := add(sum, shr(192, mul(add(Do, De), ONES64)))
            }
            th2 := sub(add(sq, shl(64, shl(3, nw))), shl(33, sum))
            h := keccak256(out, shl(2, n_))

            /// the four 64-bit slots of x, each divided by d
            function quotients(x, d) -> q {
                q := or(
                    or(div(and(x, 0xffffffffffffffff), d), shl(64, div(and(shr(64, x), 0xffffffffffffffff), d))),
                    or(shl(128, div(and(shr(128, x), 0xffffffffffffffff), d)), shl(192, div(shr(192, x), d)))
                )
            }
            /// x0^2 + x1^2 of x = x0 + x1 2^128 (x0, x1 < 2^64)
            function squares2(x) -> s {
                s := shr(128, mul(x, or(shr(128, x), shl(128, x))))
            }
        }
    }
}
