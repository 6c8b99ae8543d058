using System.Text.Json;
using System.Text.Json.Serialization;

namespace SandboxVM.Client.Internal;

/// <summary>
/// Maps wire strings to an enum without reflection; anything unrecognised (a newer server's value,
/// null, a number) reads as the enum's default (its Unknown member) instead of failing the response.
/// </summary>
internal abstract class LenientEnumConverter<T> : JsonConverter<T>
    where T : struct, Enum
{
    private readonly (string Wire, T Value)[] _names;

    protected LenientEnumConverter(params (string Wire, T Value)[] names) => _names = names;

    public override T Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (reader.TokenType != JsonTokenType.String)
        {
            reader.Skip();
            return default;
        }

        var text = reader.GetString();
        foreach (var (wire, value) in _names)
        {
            if (string.Equals(wire, text, StringComparison.OrdinalIgnoreCase))
            {
                return value;
            }
        }

        return default;
    }

    public override void Write(Utf8JsonWriter writer, T value, JsonSerializerOptions options)
    {
        foreach (var (wire, known) in _names)
        {
            if (EqualityComparer<T>.Default.Equals(known, value))
            {
                writer.WriteStringValue(wire);
                return;
            }
        }

        writer.WriteStringValue("unknown");
    }
}

internal sealed class RunStatusConverter() : LenientEnumConverter<RunStatus>(
    ("ok", RunStatus.Ok),
    ("error", RunStatus.Error),
    ("compile_error", RunStatus.CompileError),
    ("timeout", RunStatus.Timeout),
    ("oom", RunStatus.Oom),
    ("output_limit", RunStatus.OutputLimit),
    ("sandbox_error", RunStatus.SandboxError));

internal sealed class VmSourceConverter() : LenientEnumConverter<VmSource>(
    ("pool", VmSource.Pool),
    ("restore", VmSource.Restore),
    ("boot", VmSource.Boot),
    ("singleton", VmSource.Singleton),
    ("process", VmSource.Process));

internal sealed class SandboxStateConverter() : LenientEnumConverter<SandboxState>(
    ("running", SandboxState.Running),
    ("ended", SandboxState.Ended),
    ("pausing", SandboxState.Pausing),
    ("paused", SandboxState.Paused),
    ("resuming", SandboxState.Resuming));

internal sealed class SandboxFileKindConverter() : LenientEnumConverter<SandboxFileKind>(
    ("file", SandboxFileKind.File),
    ("directory", SandboxFileKind.Directory),
    ("symlink", SandboxFileKind.Symlink),
    ("other", SandboxFileKind.Other));
