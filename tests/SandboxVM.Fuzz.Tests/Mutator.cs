using System.Buffers.Binary;
using CsCheck;

namespace SandboxVM.Fuzz.Tests;

/// <summary>
/// Structure-aware mutation of a seed corpus as a CsCheck generator: pick a corpus entry, apply up to a
/// few mutations (bit flips, byte sets, inserts of random bytes or of target-specific tokens, deletes,
/// repeats of a range, truncation, splices with another entry, 32-bit big-endian fields set to boundary
/// values). Positions are fractions of the current length so a mutation applies to any input. Being
/// a generator, a failing input shrinks toward fewer and smaller mutations.
/// </summary>
internal static class Mutator
{
    /// <summary>Mutated inputs are cut at this size so repeats cannot grow without bound.</summary>
    public const int MaxSize = 256 * 1024;

    private static readonly uint[] _boundaries =
        [0, 1, 4, 5, 6, 8, 9, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x1_0000, 0x10_0000, 0x10_0004, 0x10_0005, 0x10_0006,
         0x7fff_ffff, 0x8000_0000, 0xffff_fffa, 0xffff_fffe, 0xffff_ffff];

    private abstract record Mutation
    {
        public abstract byte[] Apply(byte[] data, IReadOnlyList<byte[]> corpus);

        protected static int At(byte[] data, double fraction) => (int)(fraction * data.Length);
    }

    private sealed record FlipBit(double Pos, int Bit) : Mutation
    {
        public override byte[] Apply(byte[] data, IReadOnlyList<byte[]> corpus)
        {
            if (data.Length == 0)
            {
                return data;
            }
            var copy = (byte[])data.Clone();
            copy[Math.Min(At(data, Pos), data.Length - 1)] ^= (byte)(1 << Bit);
            return copy;
        }
    }

    private sealed record SetByte(double Pos, byte Value) : Mutation
    {
        public override byte[] Apply(byte[] data, IReadOnlyList<byte[]> corpus)
        {
            if (data.Length == 0)
            {
                return data;
            }
            var copy = (byte[])data.Clone();
            copy[Math.Min(At(data, Pos), data.Length - 1)] = Value;
            return copy;
        }
    }

    private sealed record Insert(double Pos, byte[] Bytes) : Mutation
    {
        public override byte[] Apply(byte[] data, IReadOnlyList<byte[]> corpus)
        {
            int at = At(data, Pos);
            return [.. data.AsSpan(0, at), .. Bytes, .. data.AsSpan(at)];
        }
    }

    private sealed record Delete(double Pos, int Length) : Mutation
    {
        public override byte[] Apply(byte[] data, IReadOnlyList<byte[]> corpus)
        {
            int at = At(data, Pos);
            int n = Math.Min(Length, data.Length - at);
            return [.. data.AsSpan(0, at), .. data.AsSpan(at + n)];
        }
    }

    /// <summary>The range [Pos, Pos+Length) written Times times in a row (nesting, repeated headers, frame floods).</summary>
    private sealed record Repeat(double Pos, int Length, int Times) : Mutation
    {
        public override byte[] Apply(byte[] data, IReadOnlyList<byte[]> corpus)
        {
            int at = At(data, Pos);
            int n = Math.Min(Length, data.Length - at);
            if (n == 0)
            {
                return data;
            }
            var result = new List<byte>(data.Length + n * Times);
            result.AddRange(data.AsSpan(0, at + n));
            for (int i = 0; i < Times && result.Count < MaxSize; i++)
            {
                result.AddRange(data.AsSpan(at, n));
            }
            result.AddRange(data.AsSpan(at + n));
            return [.. result];
        }
    }

    private sealed record Truncate(double Pos) : Mutation
    {
        public override byte[] Apply(byte[] data, IReadOnlyList<byte[]> corpus) => data[..At(data, Pos)];
    }

    private sealed record Splice(double Pos, int Other, double OtherPos) : Mutation
    {
        public override byte[] Apply(byte[] data, IReadOnlyList<byte[]> corpus)
        {
            var other = corpus[Other % corpus.Count];
            return [.. data.AsSpan(0, At(data, Pos)), .. other.AsSpan(At(other, OtherPos))];
        }
    }

    private sealed record SetU32(double Pos, uint Value) : Mutation
    {
        public override byte[] Apply(byte[] data, IReadOnlyList<byte[]> corpus)
        {
            if (data.Length < 4)
            {
                return data;
            }
            var copy = (byte[])data.Clone();
            BinaryPrimitives.WriteUInt32BigEndian(copy.AsSpan(Math.Min(At(data, Pos), data.Length - 4)), Value);
            return copy;
        }
    }

    /// <summary>Mutated corpus entries; <paramref name="tokens"/> are inserted whole (CRLF, "..", "&amp;a", frame headers).</summary>
    public static Gen<byte[]> From(IReadOnlyList<byte[]> corpus, IReadOnlyList<byte[]> tokens, int maxMutations = 6)
    {
        var pos = Gen.Double[0, 1];
        var mutation = Gen.Frequency<Mutation>(
            (3, Gen.Select(pos, Gen.Int[0, 7], (p, b) => (Mutation)new FlipBit(p, b))),
            (3, Gen.Select(pos, Gen.Byte, (p, v) => (Mutation)new SetByte(p, v))),
            (2, Gen.Select(pos, Gen.Byte.Array[1, 16], (p, v) => (Mutation)new Insert(p, v))),
            (4, Gen.Select(pos, Gen.Int[0, Math.Max(0, tokens.Count - 1)], (p, t) => (Mutation)new Insert(p, tokens.Count == 0 ? [] : tokens[t]))),
            (2, Gen.Select(pos, Gen.Int[1, 64], (p, n) => (Mutation)new Delete(p, n))),
            (2, Gen.Select(pos, Gen.Int[1, 32], Gen.Frequency((3, Gen.Int[1, 8]), (1, Gen.Int[9, 5000])), (p, n, t) => (Mutation)new Repeat(p, n, t))),
            (1, Gen.Select(pos, p => (Mutation)new Truncate(p))),
            (1, Gen.Select(pos, Gen.Int[0, corpus.Count - 1], pos, (p, o, q) => (Mutation)new Splice(p, o, q))),
            (2, Gen.Select(pos, Gen.OneOf(_boundaries), (p, v) => (Mutation)new SetU32(p, v))));
        return Gen.Select(Gen.Int[0, corpus.Count - 1], mutation.Array[0, maxMutations], (i, mutations) =>
        {
            var data = corpus[i];
            foreach (var m in mutations)
            {
                data = m.Apply(data, corpus);
                if (data.Length > MaxSize)
                {
                    data = data[..MaxSize];
                }
            }
            return data;
        });
    }
}
