// A consumer group as Kafka's own admin client (kafka-clients) reports it:
// its protocol type and state, then its committed offsets, one line each.
// With `rewind TOPIC`, first sets the group's committed offset of every
// partition of TOPIC to 0 (the group must have no members), as an operator's
// `kafka-consumer-groups --reset-offsets --to-earliest` would.
//
//   java -cp '<kafka libs>/*' GroupOffsets.java BROKERS GROUP [rewind TOPIC]
//
// prints
//   group <CLASSIC|CONSUMER> <state>
//   offset <topic> <partition> <offset>
//
// tests/ingest.rs runs it to hold what lake ingest committed to Kafka against
// the offsets recorded in the bronze table, through a client lake does not use.
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;

public class GroupOffsets {
    public static void main(String[] args) throws Exception {
        boolean rewind = args.length == 4 && args[2].equals("rewind");
        if (args.length != 2 && !rewind) {
            System.err.println("usage: GroupOffsets BROKERS GROUP [rewind TOPIC]");
            System.exit(2);
        }
        Properties properties = new Properties();
        properties.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        try (Admin admin = Admin.create(properties)) {
            if (rewind) {
                TopicDescription topic = admin.describeTopics(List.of(args[3]))
                    .allTopicNames().get(30, TimeUnit.SECONDS).get(args[3]);
                Map<TopicPartition, OffsetAndMetadata> earliest = new HashMap<>();
                topic.partitions().forEach(p ->
                    earliest.put(new TopicPartition(args[3], p.partition()), new OffsetAndMetadata(0)));
                admin.alterConsumerGroupOffsets(args[1], earliest).all().get(30, TimeUnit.SECONDS);
            }
            ConsumerGroupDescription group = admin.describeConsumerGroups(List.of(args[1]))
                .describedGroups().get(args[1]).get(30, TimeUnit.SECONDS);
            System.out.println("group " + group.type() + " " + group.groupState());
            Map<TopicPartition, OffsetAndMetadata> offsets = admin.listConsumerGroupOffsets(args[1])
                .partitionsToOffsetAndMetadata().get(30, TimeUnit.SECONDS);
            Map<String, Long> sorted = new TreeMap<>();
            for (Map.Entry<TopicPartition, OffsetAndMetadata> entry : offsets.entrySet()) {
                if (entry.getValue() != null) {
                    TopicPartition tp = entry.getKey();
                    sorted.put(String.format("%s %010d", tp.topic(), tp.partition()), entry.getValue().offset());
                }
            }
            for (Map.Entry<String, Long> entry : sorted.entrySet()) {
                String[] key = entry.getKey().split(" ");
                System.out.println("offset " + key[0] + " " + Integer.parseInt(key[1]) + " " + entry.getValue());
            }
        }
    }
}
