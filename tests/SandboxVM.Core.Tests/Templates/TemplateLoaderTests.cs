using SandboxVM.Core.Templates;

namespace SandboxVM.Core.Tests.Templates;

[Trait("tier", "unit")]
public sealed class TemplateLoaderTests : IDisposable
{
    private const string Minimal = """
        name: t
        source:
          type: debian
        language:
          name: sh
          source_file: main.sh
          run: [sh, main.sh]

        """;

    private const string Full = """
        name: full
        description: Every field set.
        source:
          type: debian
          suite: trixie
          packages: [g++, python3-numpy]
        build:
          - echo one
          - |
            echo two
            echo three
        language:
          name: cpp
          source_file: main.cpp
          compile: [g++, -O2, -o, main, main.cpp]
          run: [./main, --fast]
          env:
            GOCACHE: /tmp/go-cache
            GO111MODULE: off
            LEVEL: 3
        vcpus: 4
        memory_mib: 2048
        disk_mib: 4096
        limits:
          compile_timeout_s: 12.5
          run_timeout_s: 7
          max_timeout_s: 60
          output_bytes: 65536
          processes: 32
          file_bytes: 1073741824
        output: text+images
        network:
          mode: proxy
          allow: ["*.example.com", api.example.org, 203.0.113.7]
          deny: [10.0.0.0/8, "fe80::/10", metadata.google.internal]
        warmup:
          strategy: pool
          pool_size: 5
          script: |
            import numpy

        """;

    private readonly string _dir = Directory.CreateTempSubdirectory("sbvm-templates-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Write(string name, string yaml, string? dir = null)
    {
        var path = Path.Combine(dir ?? _dir, name + ".yaml");
        File.WriteAllText(path, yaml);
        return path;
    }

    private TemplateLoadException LoadFails(string yaml, string fileName = "t")
    {
        var path = Write(fileName, yaml);
        var e = Assert.Throws<TemplateLoadException>(() => TemplateRegistry.LoadFile(path));
        Assert.Equal(path, e.File);
        Assert.Contains(path, e.Message, StringComparison.Ordinal);
        return e;
    }

    [Fact]
    public void LoadFile_WithEveryField_ReadsThemAll()
    {
        var path = Write("full", Full);

        var t = TemplateRegistry.LoadFile(path);

        Assert.Equal("full", t.Name);
        Assert.Equal("Every field set.", t.Description);
        Assert.Equal(path, t.FilePath);
        Assert.Equal("debian", t.Source.Type);
        Assert.Equal("trixie", t.Source.Suite);
        Assert.Equal(["g++", "python3-numpy"], t.Source.Packages);
        Assert.Equal(["echo one", "echo two\necho three\n"], t.BuildSteps);
        Assert.Equal("cpp", t.Language.Name);
        Assert.Equal("main.cpp", t.Language.SourceFile);
        Assert.Equal(["g++", "-O2", "-o", "main", "main.cpp"], t.Language.Compile);
        Assert.Equal(["./main", "--fast"], t.Language.Run);
        Assert.Equal("/tmp/go-cache", t.Language.Env["GOCACHE"]);
        Assert.Equal("off", t.Language.Env["GO111MODULE"]);
        Assert.Equal("3", t.Language.Env["LEVEL"]);
        Assert.Equal(4, t.Vcpus);
        Assert.Equal(2048, t.MemoryMib);
        Assert.Equal(4096, t.DiskMib);
        Assert.Equal(12.5, t.Limits.CompileTimeoutS);
        Assert.Equal(7, t.Limits.RunTimeoutS);
        Assert.Equal(60, t.Limits.MaxTimeoutS);
        Assert.Equal(65536, t.Limits.OutputBytes);
        Assert.Equal(32, t.Limits.Processes);
        Assert.Equal(1L << 30, t.Limits.FileBytes);
        Assert.Equal(OutputMode.TextAndImages, t.Output);
        Assert.Equal(NetworkMode.Proxy, t.Network.Mode);
        Assert.Equal(["*.example.com", "api.example.org", "203.0.113.7"], t.Network.Allow);
        Assert.Equal(["10.0.0.0/8", "fe80::/10", "metadata.google.internal"], t.Network.Deny);
        Assert.Equal(WarmupStrategy.Pool, t.Warmup.Strategy);
        Assert.Equal(5, t.Warmup.PoolSize);
        Assert.Equal("import numpy\n", t.Warmup.Script);
    }

    [Fact]
    public void LoadFile_WithOnlyRequiredFields_AppliesDefaults()
    {
        var t = TemplateRegistry.LoadFile(Write("t", Minimal));

        Assert.Equal("", t.Description);
        Assert.Equal("bookworm", t.Source.Suite);
        Assert.Empty(t.Source.Packages);
        Assert.Empty(t.BuildSteps);
        Assert.Null(t.Language.Compile);
        Assert.Empty(t.Language.Env);
        Assert.Equal(1, t.Vcpus);
        Assert.Equal(512, t.MemoryMib);
        Assert.Equal(2048, t.DiskMib);
        Assert.Equal(30, t.Limits.CompileTimeoutS);
        Assert.Equal(10, t.Limits.RunTimeoutS);
        Assert.Equal(300, t.Limits.MaxTimeoutS);
        Assert.Equal(1024 * 1024, t.Limits.OutputBytes);
        Assert.Equal(128, t.Limits.Processes);
        Assert.Equal(256L * 1024 * 1024, t.Limits.FileBytes);
        Assert.Equal(OutputMode.Text, t.Output);
        Assert.Equal(NetworkMode.None, t.Network.Mode);
        Assert.Equal(WarmupStrategy.Pool, t.Warmup.Strategy);
        Assert.Equal(2, t.Warmup.PoolSize);
        Assert.Null(t.Warmup.Script);
    }

    [Fact]
    public void LoadFile_WithOciSources_ParsesThem()
    {
        var oci = TemplateRegistry.LoadFile(Write("t", Minimal.Replace("type: debian", "type: oci\n  reference: 127.0.0.1:5000/team/python:3.12-slim", StringComparison.Ordinal)));
        Assert.Equal("oci", oci.Source.Type);
        Assert.Equal("127.0.0.1:5000/team/python:3.12-slim", oci.Source.Reference);
        Assert.True(oci.Source.TlsVerify);
        var plain = TemplateRegistry.LoadFile(Write("t", Minimal.Replace("type: debian", "type: oci\n  reference: 127.0.0.1:5000/a:1\n  tls_verify: false", StringComparison.Ordinal)));
        Assert.False(plain.Source.TlsVerify);
        var badFlag = Assert.Throws<TemplateLoadException>(() => TemplateRegistry.LoadFile(Write("t", Minimal.Replace("type: debian", "type: oci\n  reference: 127.0.0.1:5000/a:1\n  tls_verify: maybe", StringComparison.Ordinal))));
        Assert.Contains("source.tls_verify: expected true or false, got 'maybe'", badFlag.Message, StringComparison.Ordinal);
        var scheme = Assert.Throws<TemplateLoadException>(() => TemplateRegistry.LoadFile(Write("t", Minimal.Replace("type: debian", "type: oci\n  reference: https://127.0.0.1:5000/a:1", StringComparison.Ordinal))));
        Assert.Contains("source.reference: 'https://127.0.0.1:5000/a:1' is not an image reference", scheme.Message, StringComparison.Ordinal);

        var layout = TemplateRegistry.LoadFile(Write("t", Minimal.Replace("type: debian", "type: oci-layout\n  path: images/py", StringComparison.Ordinal)));
        Assert.Equal("oci-layout", layout.Source.Type);
        // Relative to the template file, not the working directory.
        Assert.Equal(Path.Combine(_dir, "images", "py"), layout.Source.Path);
        Assert.Null(layout.Source.Tag);
        var tagged = TemplateRegistry.LoadFile(Write("t", Minimal.Replace("type: debian", "type: oci-layout\n  path: /srv/images/py\n  tag: \"3.12\"", StringComparison.Ordinal)));
        Assert.Equal("3.12", tagged.Source.Tag);
        var badTag = Assert.Throws<TemplateLoadException>(() => TemplateRegistry.LoadFile(Write("t", Minimal.Replace("type: debian", "type: oci-layout\n  path: /srv/images/py\n  tag: a/b", StringComparison.Ordinal))));
        Assert.Contains("source.tag: 'a/b' is not an image tag", badTag.Message, StringComparison.Ordinal);
    }

    private const string Python = """
        name: t
        source:
          type: debian
        language:
          name: python
          source_file: main.py
          run: [python3, -u, main.py]
          fork_server:
            preload: [numpy, matplotlib.pyplot, _private]

        """;

    [Fact]
    public void LoadFile_WithForkServer_ReadsThePreloadList()
    {
        var t = TemplateRegistry.LoadFile(Write("t", Python));

        Assert.NotNull(t.Language.ForkServer);
        Assert.Equal(["numpy", "matplotlib.pyplot", "_private"], t.Language.ForkServer.Preload);
        Assert.Null(TemplateRegistry.LoadFile(Write("t", Minimal)).Language.ForkServer);
        // Present but empty: a warm interpreter without preloaded modules.
        var empty = TemplateRegistry.LoadFile(Write("t", Python.Replace("    preload: [numpy, matplotlib.pyplot, _private]\n", "", StringComparison.Ordinal)
            .Replace("fork_server:", "fork_server: {}", StringComparison.Ordinal)));
        Assert.NotNull(empty.Language.ForkServer);
        Assert.Empty(empty.Language.ForkServer.Preload);
    }

    public static TheoryData<string, string, string> BadFiles => new()
    {
        // yaml, field, part of the reason
        { Minimal + "memroy_mib: 512\n", "memroy_mib", "unknown key 'memroy_mib'; did you mean 'memory_mib'?" },
        { Minimal + "limits:\n  run_timeout: 5\n", "limits.run_timeout", "unknown key 'run_timeout'" },
        { Minimal.Replace("name: t\n", "", StringComparison.Ordinal), "name", "is required" },
        { Minimal.Replace("  run: [sh, main.sh]\n", "", StringComparison.Ordinal), "language.run", "is required" },
        { Minimal.Replace("source:\n  type: debian\n", "", StringComparison.Ordinal), "source", "is required" },
        { Minimal.Replace("  source_file: main.sh\n", "", StringComparison.Ordinal), "language.source_file", "is required" },
        { Minimal + "vcpus: two\n", "vcpus", "expected a whole number, got 'two'" },
        { Minimal + "vcpus: \"2\"\n", "vcpus", "expected a whole number" },
        { Minimal + "vcpus: 64\n", "vcpus", "64 is out of range (1..32)" },
        { Minimal + "memory_mib: 32\n", "memory_mib", "32 is out of range (64..65536)" },
        { Minimal + "build: echo hi\n", "build", "expected a list, got 'echo hi'" },
        { Minimal + "build: [echo, [nested]]\n", "build[1]", "expected a string, got a list" },
        { Minimal + "limits:\n  run_timeout_s: 0\n", "limits.run_timeout_s", "0 is out of range" },
        { Minimal + "limits:\n  compile_timeout_s: -1\n", "limits.compile_timeout_s", "out of range" },
        { Minimal + "limits:\n  run_timeout_s: soon\n", "limits.run_timeout_s", "expected a number of seconds" },
        { Minimal + "limits:\n  run_timeout_s: 50\n  max_timeout_s: 20\n", "limits.max_timeout_s", "must be at least run_timeout_s (50)" },
        { Minimal + "limits: 5\n", "limits", "expected a mapping" },
        { Minimal + "output: images\n", "output", "'images' is not one of: text, text+images" },
        { Minimal + "network:\n  mode: open\n", "network.mode", "'open' is not one of: none, proxy" },
        { Minimal + "network:\n  allow: [example.com]\n", "network.allow", "rules only apply with mode: proxy" },
        { Minimal + "network:\n  mode: proxy\n  deny: [\"not a host\"]\n", "network.deny[0]", "'not a host' is neither a host name" },
        { Minimal + "warmup:\n  strategy: eager\n", "warmup.strategy", "'eager' is not one of: pool, cold, singleton" },
        { Minimal + "warmup:\n  strategy: singleton\n  pool_size: 3\n", "warmup.pool_size", "only applies to strategy: pool" },
        { Minimal + "warmup:\n  pool_size: 100\n", "warmup.pool_size", "out of range (0..64)" },
        { Minimal.Replace("type: debian", "type: docker", StringComparison.Ordinal), "source.type", "unknown source type 'docker'" },
        { Minimal.Replace("type: debian", "type: oci\n  reference: x\n  packages: [a]", StringComparison.Ordinal), "source.packages", "not allowed for source type 'oci'" },
        { Minimal.Replace("type: debian", "type: oci", StringComparison.Ordinal), "source.reference", "is required" },
        { Minimal.Replace("type: debian", "type: debian\n  packages: [g++, \"--no-check\"]", StringComparison.Ordinal), "source.packages[1]", "is not a Debian package name" },
        { Minimal.Replace("type: debian", "type: debian\n  suite: Book Worm", StringComparison.Ordinal), "source.suite", "is not a Debian suite name" },
        { Minimal.Replace("  run: [sh, main.sh]", "  run: []", StringComparison.Ordinal), "language.run", "must hold at least the program" },
        { Minimal.Replace("source_file: main.sh", "source_file: ../etc/passwd", StringComparison.Ordinal), "language.source_file", "must be a plain file name" },
        { Minimal.Replace("  run: [sh, main.sh]", "  run: [sh, main.sh]\n  env:\n    1BAD: x", StringComparison.Ordinal), "language.env.1BAD", "not a valid environment variable name" },
        { Python.Replace("_private", "numpy-extra", StringComparison.Ordinal), "language.fork_server.preload[2]", "'numpy-extra' is not a Python module name" },
        { Python.Replace("    preload:", "    preloads:", StringComparison.Ordinal), "language.fork_server.preloads", "unknown key 'preloads'; did you mean 'preload'?" },
        { Python.Replace("run: [python3, -u, main.py]", "run: [python3, -c, \"print(1)\"]", StringComparison.Ordinal), "language.fork_server", "needs language.run to be the interpreter followed by source_file 'main.py'" },
        { Python.Replace("run: [python3, -u, main.py]", "run: [main.py]", StringComparison.Ordinal), "language.fork_server", "needs language.run" },
        { Python.Replace("  run:", "  compile: [cython, main.py]\n  run:", StringComparison.Ordinal), "language.fork_server", "only applies to interpreted Python" },
        { Python.Replace("  fork_server:\n    preload: [numpy, matplotlib.pyplot, _private]", "  fork_server: [numpy]", StringComparison.Ordinal), "language.fork_server", "expected a mapping" },
    };

    [Theory]
    [MemberData(nameof(BadFiles))]
    public void LoadFile_WithBadField_NamesFileFieldAndReason(string yaml, string field, string reason)
    {
        var e = LoadFails(yaml);

        Assert.True(field == e.Field, e.Message);
        Assert.Contains($"{field}: ", e.Message, StringComparison.Ordinal);
        Assert.Contains(reason, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void LoadFile_WithUnknownKey_ReportsItsLine()
    {
        var e = LoadFails(Minimal + "memroy_mib: 512\n");

        Assert.Equal(8, e.Line);
        Assert.StartsWith($"{e.File}:8: memroy_mib: unknown key", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void LoadFile_WithYamlSyntaxError_NamesFileAndLine()
    {
        var e = LoadFails(Minimal + "limits:\n  run_timeout_s: [1, 2\n");

        Assert.NotNull(e.Line);
        Assert.InRange(e.Line.Value, 10, 12);
        Assert.Contains("invalid YAML", e.Message, StringComparison.Ordinal);
        Assert.Contains($"{e.File}:{e.Line}:", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void LoadFile_WithDuplicateKey_NamesKeyAndLine()
    {
        var e = LoadFails(Minimal + "language:\n  name: x\n");

        Assert.Equal(8, e.Line);
        Assert.Contains("duplicate key 'language'", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void LoadFile_WithEmptyFile_SaysSo()
    {
        var e = LoadFails("# nothing here\n");

        Assert.Contains("the file is empty", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void LoadFile_WithNameNotMatchingFileName_Fails()
    {
        var e = LoadFails(Minimal, fileName: "other");

        Assert.Equal("name", e.Field);
        Assert.Contains("does not match the file name 'other.yaml'", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void LoadFile_WithInvalidName_Fails()
    {
        var e = LoadFails(Minimal.Replace("name: t", "name: Bad_Name", StringComparison.Ordinal), fileName: "Bad_Name");

        Assert.Equal("name", e.Field);
        Assert.Contains("'Bad_Name' is not a valid name", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Load_WithSameNameInTwoDirectories_NamesBothFiles()
    {
        var user = Directory.CreateDirectory(Path.Combine(_dir, "user")).FullName;
        var first = Write("t", Minimal);
        var second = Write("t", Minimal, user);

        var e = Assert.Throws<TemplateLoadException>(() => TemplateRegistry.Load([_dir, user]));

        Assert.Equal(second, e.File);
        Assert.Equal("name", e.Field);
        Assert.Contains($"already defined in {first}", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Load_WithMissingDirectory_NamesIt()
    {
        var missing = Path.Combine(_dir, "missing");

        var e = Assert.Throws<TemplateLoadException>(() => TemplateRegistry.Load([missing]));

        Assert.Equal(missing, e.File);
        Assert.Contains("does not exist", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Load_WithOneBadFileAmongGoodOnes_Fails()
    {
        Write("t", Minimal);
        var bad = Write("u", Minimal.Replace("name: t", "name: u", StringComparison.Ordinal) + "vcpus: 0\n");

        var e = Assert.Throws<TemplateLoadException>(() => TemplateRegistry.Load([_dir]));

        Assert.Equal(bad, e.File);
    }

    [Fact]
    public void Load_IgnoresOtherAndHiddenFiles()
    {
        Write("t", Minimal);
        File.WriteAllText(Path.Combine(_dir, "README.md"), "not a template");
        File.WriteAllText(Path.Combine(_dir, ".t.yaml"), "garbage: [");

        var registry = TemplateRegistry.Load([_dir]);

        Assert.Equal(["t"], registry.All.Select(t => t.Name));
        Assert.True(registry.TryGet("t", out var t));
        Assert.Equal("t", t.Name);
        Assert.False(registry.TryGet("missing", out _));
    }

    [Fact]
    public void ContentHash_DependsOnlyOnSourceAndBuildSteps()
    {
        var baseline = TemplateRegistry.Parse(Full).ContentHash;

        Assert.Matches("^[0-9a-f]{64}$", baseline);
        Assert.Equal(baseline, TemplateRegistry.Parse(Full).ContentHash);
        // Not part of the image: description, limits, recipe, packages' order.
        Assert.Equal(baseline, TemplateRegistry.Parse(Full.Replace("Every field set.", "Changed.", StringComparison.Ordinal)).ContentHash);
        Assert.Equal(baseline, TemplateRegistry.Parse(Full.Replace("run_timeout_s: 7", "run_timeout_s: 8", StringComparison.Ordinal)).ContentHash);
        Assert.Equal(baseline, TemplateRegistry.Parse(Full.Replace("[g++, python3-numpy]", "[python3-numpy, g++]", StringComparison.Ordinal)).ContentHash);
        // Part of the image.
        Assert.NotEqual(baseline, TemplateRegistry.Parse(Full.Replace("suite: trixie", "suite: bookworm", StringComparison.Ordinal)).ContentHash);
        Assert.NotEqual(baseline, TemplateRegistry.Parse(Full.Replace("[g++, python3-numpy]", "[g++]", StringComparison.Ordinal)).ContentHash);
        Assert.NotEqual(baseline, TemplateRegistry.Parse(Full.Replace("echo one", "echo 1", StringComparison.Ordinal)).ContentHash);
    }

    [Fact]
    public void BuiltInTemplates_AllLoad()
    {
        var registry = TemplateRegistry.Load([Path.Combine(RepoRoot(), "templates")]);

        Assert.Equal(["cpp-algorithm", "go-algorithm", "python-data-analysis", "websearch-tools"], registry.All.Select(t => t.Name));
        Assert.All(registry.All, t => Assert.Equal("debian", t.Source.Type));

        Assert.True(registry.TryGet("cpp-algorithm", out var cpp));
        Assert.Equal(["g++", "-std=gnu++17", "-O2", "-pipe", "-o", "main", "main.cpp"], cpp.Language.Compile);
        Assert.Equal(["./main"], cpp.Language.Run);
        Assert.Contains(cpp.BuildSteps, s => s.Contains("stdc++.h.gch", StringComparison.Ordinal));

        Assert.True(registry.TryGet("go-algorithm", out var go));
        Assert.Equal("main.go", go.Language.SourceFile);
        Assert.Equal("/tmp/go-cache", go.Language.Env["GOCACHE"]);
        Assert.Equal("off", go.Language.Env["GO111MODULE"]);

        Assert.True(registry.TryGet("python-data-analysis", out var py));
        Assert.Equal(OutputMode.TextAndImages, py.Output);
        Assert.Equal("Agg", py.Language.Env["MPLBACKEND"]);
        Assert.Contains("matplotlib.pyplot", py.Warmup.Script, StringComparison.Ordinal);
        Assert.Equal(["numpy", "pandas", "matplotlib.pyplot"], py.Language.ForkServer?.Preload);
        Assert.Null(cpp.Language.ForkServer);

        Assert.True(registry.TryGet("websearch-tools", out var web));
        Assert.Equal(NetworkMode.Proxy, web.Network.Mode);
        Assert.Equal(WarmupStrategy.Singleton, web.Warmup.Strategy);
        // Address ranges are left to the policy's built-in private_address check (so EgressAllow can open one).
        Assert.Contains("localhost", web.Network.Deny);
        Assert.DoesNotContain("127.0.0.0/8", web.Network.Deny);
        Assert.NotNull(web.FilesDir);
        Assert.True(File.Exists(Path.Combine(web.FilesDir!, "usr/lib/python3/dist-packages/websearch/__init__.py")));
        Assert.Equal("http://127.0.0.1:3128", web.Language.Env["HTTPS_PROXY"]);
        Assert.Contains("import websearch", web.Warmup.Script, StringComparison.Ordinal);
    }

    [Fact]
    public void Files_AreRelativeToTheYaml_AndPartOfTheContentHash()
    {
        var files = Directory.CreateDirectory(Path.Combine(_dir, "t-files", "usr", "lib")).FullName;
        File.WriteAllText(Path.Combine(files, "a.py"), "x = 1\n");
        var t = TemplateRegistry.LoadFile(Write("t", Minimal + "files: t-files\n"));
        Assert.Equal(Path.Combine(_dir, "t-files"), t.FilesDir);
        string before = t.ContentHash;
        Assert.NotEqual(TemplateRegistry.LoadFile(Write("t", Minimal)).ContentHash, before);

        File.WriteAllText(Path.Combine(files, "a.py"), "x = 2\n");
        Assert.NotEqual(before, t.ContentHash);

        var e = LoadFails(Minimal + "files: nowhere\n");
        Assert.Equal("files", e.Field);
        Assert.Contains("does not exist", e.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void NetworkPorts_AreParsed_AndChecked()
    {
        var t = TemplateRegistry.LoadFile(Write("t", Minimal + "network:\n  mode: proxy\n  ports: [80, 8080]\n"));
        Assert.Equal([80, 8080], t.Network.Ports);
        Assert.Null(TemplateRegistry.LoadFile(Write("t", Minimal + "network:\n  mode: proxy\n")).Network.Ports);
        Assert.Equal("network.ports[1]", LoadFails(Minimal + "network:\n  mode: proxy\n  ports: [80, 70000]\n").Field);
        Assert.Equal("network.ports", LoadFails(Minimal + "network:\n  mode: none\n  ports: [80]\n").Field);
    }

    private static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "SandboxVM.slnx")))
                return dir.FullName;
        }

        throw new InvalidOperationException("SandboxVM.slnx not found above " + AppContext.BaseDirectory);
    }
}
