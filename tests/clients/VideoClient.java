// Submit, poll and download with Java's HttpClient exactly as newHttpClient() comes: HTTP/2 preferred,
// so on plain http:// every new connection offers "Upgrade: h2c", the POST with its body included.
// Run in single-file source mode: java VideoClient.java API_BASE KEY BODY_JSON_FILE OUT_MP4
// Prints the last task query body on stdout; exits non-zero on any failure.

import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

public class VideoClient {
    // No JSON library in single-file mode; the server's bodies are flat enough for a field regex.
    static String field(String json, String name) {
        Matcher m = Pattern.compile("\"" + name + "\"\\s*:\\s*\"([^\"]*)\"").matcher(json);
        if (!m.find()) {
            throw new IllegalStateException("no " + name + " in " + json);
        }
        return m.group(1);
    }

    static void fail(String what, HttpResponse<?> rsp) {
        System.err.println(what + ": HTTP " + rsp.statusCode() + " " + rsp.version() + " " + rsp.body());
        System.exit(1);
    }

    public static void main(String[] args) throws Exception {
        String api = args[0];
        String auth = "Bearer " + args[1];
        String body = Files.readString(Path.of(args[2]), StandardCharsets.UTF_8);
        Path out = Path.of(args[3]);
        HttpClient client = HttpClient.newHttpClient();
        Duration timeout = Duration.ofSeconds(30);

        HttpRequest submit = HttpRequest.newBuilder(URI.create(api + "/services/aigc/video-generation/video-synthesis"))
                .timeout(timeout)
                .header("Authorization", auth)
                .header("X-DashScope-Async", "enable")
                .header("Content-Type", "application/json")
                .POST(HttpRequest.BodyPublishers.ofString(body, StandardCharsets.UTF_8))
                .build();
        HttpResponse<String> rsp = client.send(submit, HttpResponse.BodyHandlers.ofString(StandardCharsets.UTF_8));
        if (rsp.statusCode() != 200) {
            fail("submit", rsp);
        }
        String taskId = field(rsp.body(), "task_id");

        long deadline = System.nanoTime() + Duration.ofSeconds(120).toNanos();
        String status;
        while (true) {
            HttpRequest query = HttpRequest.newBuilder(URI.create(api + "/tasks/" + taskId))
                    .timeout(timeout)
                    .header("Authorization", auth)
                    .GET()
                    .build();
            rsp = client.send(query, HttpResponse.BodyHandlers.ofString(StandardCharsets.UTF_8));
            if (rsp.statusCode() != 200) {
                fail("query", rsp);
            }
            status = field(rsp.body(), "task_status");
            if (!status.equals("PENDING") && !status.equals("RUNNING")) {
                break;
            }
            if (System.nanoTime() > deadline) {
                fail("task still " + status, rsp);
            }
            Thread.sleep(200);
        }
        String result = rsp.body();
        if (status.equals("SUCCEEDED")) {
            HttpRequest download = HttpRequest.newBuilder(URI.create(field(result, "video_url"))).timeout(timeout).GET().build();
            HttpResponse<Path> video = client.send(download, HttpResponse.BodyHandlers.ofFile(out));
            if (video.statusCode() != 200) {
                fail("download", video);
            }
        }
        System.out.println(result);
    }
}
