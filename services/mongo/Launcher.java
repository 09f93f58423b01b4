import de.bwaldvogel.mongo.MongoServer;
import de.bwaldvogel.mongo.ServerVersion;
import de.bwaldvogel.mongo.backend.memory.MemoryBackend;

// Starts mongo-java-server (in-memory backend, oplog on, so change streams work) on 127.0.0.1:PORT and
// runs until killed. Used by sluice's tests and demo; see services/mongo.go.
public class Launcher {
    public static void main(String[] args) throws Exception {
        int port = Integer.parseInt(args[0]);
        MemoryBackend backend = new MemoryBackend();
        backend.enableOplog();
        backend.version(ServerVersion.MONGO_5_0);
        MongoServer server = new MongoServer(backend);
        try {
            server.bind("127.0.0.1", port);
        } catch (Exception e) {
            // Netty rethrows a BindException unchecked, and its threads would keep the JVM running: exit, so
            // that a port in use fails the start at once.
            e.printStackTrace();
            System.exit(1);
        }
        System.out.println("mongo-java-server listening on 127.0.0.1:" + port);
        System.out.flush();
        Runtime.getRuntime().addShutdownHook(new Thread(server::shutdownNow));
        Thread.currentThread().join();
    }
}
